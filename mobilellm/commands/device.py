"""`mobilellm device android|ios`: benchmark the artifacts on a phone with the demo apps."""
from __future__ import annotations

import importlib

PLATFORMS = {"android": "adb + the android_demo app", "ios": "macOS with Xcode (xcrun devicectl) + the ios_demo app"}


def add_arguments(p):
    sub = p.add_subparsers(dest="platform", metavar="PLATFORM", required=True)
    for name, help_ in PLATFORMS.items():
        mod = importlib.import_module(f"mobilellm.devices.{name}")
        sp = sub.add_parser(name, help=help_, description=mod.__doc__.split("\n")[0])
        mod.add_arguments(sp)
        sp.set_defaults(_device_main=mod.main)


def main(ns):
    return ns._device_main(ns)
