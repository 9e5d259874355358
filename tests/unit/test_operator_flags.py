"""The operator's command line: what its autoscaling flags accept and refuse.

What goes in: argv lists and the environment; what is asserted: the parsed value, or a usage
error (exit 2) naming the problem. The chart's values schema refuses the same values
(tests/integration/test_chart.py), so a value cannot pass one and crash the other.
"""

from __future__ import annotations

import pytest

from agentspec_operator.main import build_parser
from agentspec_operator.settings import PrometheusAuth


@pytest.mark.parametrize(
    "url",
    [
        "http://user:pw@prom:9090",
        "http://:pw@prom:9090",
        "http://prom:9090?x=1",
        "http://prom:9090#f",
        "http://prom:0",
        "http://prom:99999",
        "ftp://prom:9090",
        "http://prom :9090",
        "prom:9090",
    ],
)
def test_prometheus_urls_with_credentials_or_extra_parts_are_refused(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["--prometheus-url", url])
    assert exit_.value.code == 2
    assert "--prometheus-url" in capsys.readouterr().err


def test_prometheus_url_window_and_auth_parse() -> None:
    args = build_parser().parse_args(
        [
            "--prometheus-url=https://thanos.monitoring.svc:10902/prom/",
            "--scaling-rate-window=90s",
            "--prometheus-auth=prom-token:bearer,tls",
        ]
    )
    assert args.prometheus_url == "https://thanos.monitoring.svc:10902/prom"
    assert args.scaling_rate_window == "90s"
    assert args.prometheus_auth == PrometheusAuth(name="prom-token", modes="bearer,tls")


@pytest.mark.parametrize("window", ["5s", "500ms", "1 minute", "0m", "1d"])
def test_rate_windows_shorter_than_10s_or_malformed_are_refused(window: str) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args([f"--scaling-rate-window={window}"])


def test_a_bad_prometheus_auth_in_the_environment_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AGENTSPEC_PROMETHEUS_AUTH", "no mode")
    parser = build_parser()  # building the parser never raises on the environment
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args([])
    assert exit_.value.code == 2
    assert "--prometheus-auth" in capsys.readouterr().err
    monkeypatch.setenv("AGENTSPEC_PROMETHEUS_AUTH", "")
    assert build_parser().parse_args([]).prometheus_auth is None
