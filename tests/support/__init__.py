"""Test-only support code: real external components started by the test fixtures.

Owns nothing the product ships. ``control_plane`` runs etcd + kube-apiserver (and, on request,
kube-controller-manager); ``redis_server`` runs a throwaway ``redis-server``; ``procs`` holds
the process plumbing both share (free ports, no-leak child processes, bounded waits).
``fake_llm`` is the one allowed double on the wire, a scripted OpenAI-compatible server;
``function_model`` holds the in-process model doubles the loop's unit tests use.

Everything here is plain Python with no pytest dependency, so benchmarks and ad-hoc scripts
can start the same components the tests use.
"""
