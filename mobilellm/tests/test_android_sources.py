"""Static checks over the Android app's Gradle, manifest and Kotlin sources: what this machine can
see without an Android SDK. Each test pins a defect that kept the app from building or measuring
what the host measures."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "android_demo"
KOTLIN = APP / "app" / "src" / "main" / "java" / "org" / "mobilellm" / "demo"


def properties() -> dict[str, str]:
    out = {}
    for line in (APP / "gradle.properties").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            k, _, v = line.partition("=")
            out[k.strip()] = v.strip()
    return out


def test_androidx_is_on():
    """executorch-android depends on androidx.core; AGP refuses the build (checkDebugAarMetadata)
    unless the project says it uses AndroidX."""
    assert properties()["android.useAndroidX"] == "true"
