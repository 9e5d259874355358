"""Test-only support code: real external components started by the test fixtures.

Owns nothing the product ships. ``control_plane`` runs etcd + kube-apiserver (and, on request,
kube-controller-manager); ``redis_server`` runs a throwaway ``redis-server``; ``procs`` holds
the process plumbing both share (free ports, no-leak child processes, bounded waits).

Everything here is plain Python with no pytest dependency, so benchmarks and ad-hoc scripts
can start the same components the tests use.
"""
