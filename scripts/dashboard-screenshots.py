#!/usr/bin/env python3
"""Screenshots of ``vigil dashboard`` for the README and docs/dashboard.md, from the tests' own setup.

Starts a real kube-apiserver (tests/realkube.py, binaries from scripts/kube-bins.sh), builds the scene
the browser tests use (tests/dashboard/scene.py: the chart's admission policy, the operator's
ServiceAccount writing the objects, users alice and bob), runs ``vigil dashboard`` as each user and
photographs the pages in headless Chromium (Debian's chromium + chromium-driver):

    docs/img/dashboard-overview.png   detectors (sparklines, verdicts) and policies (guard rails)
    docs/img/dashboard-approvals.png  pending approvals with Approve / Reject
    docs/img/dashboard-approved.png   alice approved one (her own request to Kubernetes)
    docs/img/dashboard-refused.png    bob, without the approve verb, is refused (403)
    docs/img/dashboard-actions.png    actions with before/after
    docs/img/dashboard-timeline.png   the incident timeline of the policy
    docs/img/dashboard-ask.png        the ask box (deterministic answer, no LLM)

    python scripts/dashboard-screenshots.py [--output docs/img]     (make dashboard-screenshots)
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "operator")]

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402

from tests.dashboard import scene as scenes  # noqa: E402
from tests.dashboard.browser import chromium  # noqa: E402
from tests.dashboard.process import DashboardProcess  # noqa: E402
from tests.harness import wait_for  # noqa: E402
from tests.realkube import RealKube, binaries  # noqa: E402

WIDTH = 1280


def shoot(driver: WebDriver, path: pathlib.Path) -> None:
    """The whole page: the viewport is made as tall as the document (bounded), then captured."""
    metrics = {"width": WIDTH, "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {**metrics, "height": 600})
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {**metrics, "height": max(500, min(height, 2400))})
    driver.save_screenshot(str(path))
    print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=pathlib.Path, default=ROOT / "docs" / "img")
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    kube_bin, etcd_bin = binaries()
    with tempfile.TemporaryDirectory(prefix="vigil-screens-") as tmp, \
            RealKube(pathlib.Path(tmp), kube_bin, etcd_bin) as kube:
        scene = scenes.build(kube, pathlib.Path(tmp))
        alice = DashboardProcess(scene.alice, pathlib.Path(tmp) / "alice.log")
        bob = DashboardProcess(scene.bob, pathlib.Path(tmp) / "bob.log")
        driver = chromium(WIDTH, 900)
        try:
            out = args.output
            driver.get(alice.url + "/")
            shoot(driver, out / "dashboard-overview.png")
            driver.get(alice.url + "/approvals")
            shoot(driver, out / "dashboard-approvals.png")
            driver.find_element(By.ID, f"approve-{scenes.NAMESPACE}-{scenes.PENDING}").click()
            wait_for(lambda: driver.find_elements(By.ID, "flash"), what="the outcome")
            shoot(driver, out / "dashboard-approved.png")
            driver.get(bob.url + "/approvals")
            driver.find_element(By.ID, f"approve-{scenes.NAMESPACE}-{scenes.PENDING_OTHER}").click()
            wait_for(lambda: driver.find_elements(By.ID, "flash"), what="the refusal")
            shoot(driver, out / "dashboard-refused.png")
            driver.get(alice.url + "/actions")
            shoot(driver, out / "dashboard-actions.png")
            driver.get(f"{alice.url}/timeline/{scenes.NAMESPACE}/{scenes.POLICY}")
            shoot(driver, out / "dashboard-timeline.png")
            driver.get(alice.url + "/ask")
            driver.find_element(By.ID, "question").send_keys(f"why {scenes.DONE}")
            driver.find_element(By.ID, "ask-button").click()
            wait_for(lambda: driver.find_elements(By.ID, "answer"), what="the answer")
            shoot(driver, out / "dashboard-ask.png")
        finally:
            driver.quit()
            alice.stop()
            bob.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
