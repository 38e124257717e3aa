"""Writes ios_demo/MobileLLMDemo.xcodeproj (project.pbxproj and the shared scheme) from the lists below.

The project is generated, not hand-edited, so that it stays consistent (every object id referenced
exists, every source file is in a build phase); mobilellm/tests/test_device_ios.py checks that the
committed project is what this script writes. Run it after adding or removing a Swift file:

    python ios_demo/tools/make_xcodeproj.py

ExecuTorch is a Swift package referenced here. onnxruntime-genai (for ONNX exports' `.genai`
directories) is a CocoaPod (ios_demo/Podfile), which `pod install` adds to the project on the Mac
that builds it: do not commit that change; this script writes the project without it.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # ios_demo/
NAME = "MobileLLMDemo"
TESTS = "MobileLLMDemoTests"
BUNDLE_ID = "org.mobilellm.demo"
IOS = "18.0"
EXECUTORCH_URL = "https://github.com/pytorch/executorch"
EXECUTORCH_BRANCH = "swiftpm-1.5.1"  # matches executorch==1.5.1 on the Python side
# Runtime, LLM runner, both backends, and the kernels non-delegated and LLM custom ops need.
EXECUTORCH_PRODUCTS = ["executorch", "executorch_llm", "backend_xnnpack", "backend_coreml",
                       "kernels_optimized", "kernels_quantized", "kernels_llm"]
APP_GROUPS = {"Core": ["MobileLLMCore.swift", "SentencePieceTokenizer.swift"],
              # GenaiSession.swift compiles to nothing without the onnxruntime-genai pod (ios_demo/Podfile)
              "Engines": ["LLMSession.swift", "ExecuTorchSession.swift", "CoreMLSession.swift", "GenaiSession.swift"],
              "App": ["MobileLLMDemoApp.swift", "ArtifactLibrary.swift", "Benchmark.swift", "DeviceInfo.swift"],
              "Views": ["ContentView.swift", "ChatView.swift"]}
TEST_FILES = ["BenchmarkTests.swift"]
RESOURCE_FOLDER = "Artifacts"  # a folder reference: whatever is in it at build time is bundled


def oid(*key: str) -> str:
    return hashlib.md5("/".join(key).encode()).hexdigest()[:24].upper()


def q(s: str) -> str:
    """A pbxproj string: bare when it is a plain word, quoted otherwise."""
    if s and all(c.isalnum() or c in "._/" for c in s.replace("_", "a")):
        return s
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def plist(v, indent: int) -> str:
    pad = "\t" * indent
    if isinstance(v, dict):
        inner = "".join(f"{pad}\t{q(k)} = {plist(x, indent + 1)};\n" for k, x in v.items())
        return "{\n" + inner + pad + "}"
    if isinstance(v, list):
        inner = "".join(f"{pad}\t{plist(x, indent + 1)},\n" for x in v)
        return "(\n" + inner + pad + ")"
    return q(str(v))


def settings_app(config: str) -> dict:
    return {
        "CODE_SIGN_STYLE": "Automatic",
        "CURRENT_PROJECT_VERSION": "1",
        "DEVELOPMENT_TEAM": "",
        "ENABLE_TESTABILITY": "YES",  # the XCTest benchmark runs the Release build
        "GENERATE_INFOPLIST_FILE": "YES",
        "INFOPLIST_KEY_CFBundleDisplayName": "MobileLLM",
        "INFOPLIST_KEY_LSSupportsOpeningDocumentsInPlace": "YES",
        "INFOPLIST_KEY_UIApplicationSceneManifest_Generation": "YES",
        "INFOPLIST_KEY_UIFileSharingEnabled": "YES",
        "INFOPLIST_KEY_UILaunchScreen_Generation": "YES",
        "INFOPLIST_KEY_UISupportedInterfaceOrientations": "UIInterfaceOrientationPortrait",
        "LD_RUNPATH_SEARCH_PATHS": ["$(inherited)", "@executable_path/Frameworks"],
        "MARKETING_VERSION": "0.1.0",
        "OTHER_LDFLAGS": ["$(inherited)", "-all_load"],  # ExecuTorch registers kernels and backends statically
        "PRODUCT_BUNDLE_IDENTIFIER": BUNDLE_ID,
        "PRODUCT_NAME": "$(TARGET_NAME)",
        "SWIFT_EMIT_LOC_STRINGS": "NO",
        "SWIFT_VERSION": "5.0",
        "TARGETED_DEVICE_FAMILY": "1,2",
    }


def settings_tests(config: str) -> dict:
    return {
        "BUNDLE_LOADER": "$(TEST_HOST)",
        "CODE_SIGN_STYLE": "Automatic",
        "CURRENT_PROJECT_VERSION": "1",
        "DEVELOPMENT_TEAM": "",
        "GENERATE_INFOPLIST_FILE": "YES",
        "MARKETING_VERSION": "0.1.0",
        "PRODUCT_BUNDLE_IDENTIFIER": BUNDLE_ID + ".tests",
        "PRODUCT_NAME": "$(TARGET_NAME)",
        "SWIFT_EMIT_LOC_STRINGS": "NO",
        "SWIFT_VERSION": "5.0",
        "TARGETED_DEVICE_FAMILY": "1,2",
        "TEST_HOST": f"$(BUILT_PRODUCTS_DIR)/{NAME}.app/$(BUNDLE_EXECUTABLE_FOLDER_PATH)/{NAME}",
    }


def settings_project(config: str) -> dict:
    debug = config == "Debug"
    s = {
        "ALWAYS_SEARCH_USER_PATHS": "NO",
        "CLANG_ENABLE_MODULES": "YES",
        "CLANG_ENABLE_OBJC_ARC": "YES",
        "COPY_PHASE_STRIP": "NO",
        "DEBUG_INFORMATION_FORMAT": "dwarf" if debug else "dwarf-with-dsym",
        "ENABLE_STRICT_OBJC_MSGSEND": "YES",
        "ENABLE_USER_SCRIPT_SANDBOXING": "YES",
        "GCC_C_LANGUAGE_STANDARD": "gnu17",
        "GCC_OPTIMIZATION_LEVEL": "0" if debug else "s",
        "IPHONEOS_DEPLOYMENT_TARGET": IOS,
        "MTL_ENABLE_DEBUG_INFO": "INCLUDE_SOURCE" if debug else "NO",
        "SDKROOT": "iphoneos",
        "SWIFT_COMPILATION_MODE": "singlefile" if debug else "wholemodule",
        "SWIFT_OPTIMIZATION_LEVEL": "-Onone" if debug else "-O",
    }
    if debug:
        s["ENABLE_TESTABILITY"] = "YES"
        s["ONLY_ACTIVE_ARCH"] = "YES"
        s["SWIFT_ACTIVE_COMPILATION_CONDITIONS"] = "DEBUG $(inherited)"
    else:
        s["VALIDATE_PRODUCT"] = "YES"
    return s


def build() -> tuple[str, str]:
    objects: dict[str, tuple[str, dict]] = {}  # id -> (comment, fields)

    def add(key: tuple, comment: str, fields: dict) -> str:
        i = oid(*key)
        assert i not in objects, key
        objects[i] = (comment, fields)
        return i

    project_id = oid("project")
    app_id, test_id = oid("target", NAME), oid("target", TESTS)

    def file_ref(path: str, group: str) -> str:
        return add(("file", group, path), path, {"isa": "PBXFileReference", "lastKnownFileType": "sourcecode.swift",
                                                 "path": path, "sourceTree": "<group>"})

    def build_file(ref: str, name: str, phase: str) -> str:
        return add(("buildfile", phase, ref), f"{name} in {phase}", {"isa": "PBXBuildFile", "fileRef": ref})

    # App sources in groups, the Artifacts folder reference, the test sources.
    app_sources, app_groups = [], []
    for group, files in APP_GROUPS.items():
        refs = [file_ref(f, group) for f in files]
        app_sources += [build_file(r, f, "Sources") for r, f in zip(refs, files)]
        app_groups.append(add(("group", group), group, {"isa": "PBXGroup", "children": refs, "path": group,
                                                          "sourceTree": "<group>"}))
    folder = add(("folder", RESOURCE_FOLDER), RESOURCE_FOLDER,
                 {"isa": "PBXFileReference", "lastKnownFileType": "folder", "path": RESOURCE_FOLDER,
                  "sourceTree": "<group>"})
    folder_build = build_file(folder, RESOURCE_FOLDER, "Resources")
    test_refs = [file_ref(f, TESTS) for f in TEST_FILES]
    test_sources = [build_file(r, f, "Sources") for r, f in zip(test_refs, TEST_FILES)]

    app_product = add(("product", NAME), f"{NAME}.app",
                      {"isa": "PBXFileReference", "explicitFileType": "wrapper.application", "includeInIndex": "0",
                       "path": f"{NAME}.app", "sourceTree": "BUILT_PRODUCTS_DIR"})
    test_product = add(("product", TESTS), f"{TESTS}.xctest",
                       {"isa": "PBXFileReference", "explicitFileType": "wrapper.cfbundle", "includeInIndex": "0",
                        "path": f"{TESTS}.xctest", "sourceTree": "BUILT_PRODUCTS_DIR"})
    app_group = add(("group", NAME), NAME, {"isa": "PBXGroup", "children": app_groups + [folder], "path": NAME,
                                            "sourceTree": "<group>"})
    test_group = add(("group", TESTS), TESTS, {"isa": "PBXGroup", "children": test_refs, "path": TESTS,
                                               "sourceTree": "<group>"})
    products = add(("group", "Products"), "Products", {"isa": "PBXGroup", "children": [app_product, test_product],
                                                       "name": "Products", "sourceTree": "<group>"})
    main_group = add(("group", "main"), "", {"isa": "PBXGroup", "children": [app_group, test_group, products],
                                             "sourceTree": "<group>"})

    # The ExecuTorch Swift package and the products the app links.
    package = add(("package", "executorch"), 'XCRemoteSwiftPackageReference "executorch"',
                  {"isa": "XCRemoteSwiftPackageReference", "repositoryURL": EXECUTORCH_URL,
                   "requirement": {"branch": EXECUTORCH_BRANCH, "kind": "branch"}})
    product_deps, framework_files = [], []
    for p in EXECUTORCH_PRODUCTS:
        dep = add(("productdep", p), p, {"isa": "XCSwiftPackageProductDependency", "package": package,
                                         "productName": p})
        product_deps.append(dep)
        framework_files.append(add(("buildfile", "Frameworks", p), f"{p} in Frameworks",
                                   {"isa": "PBXBuildFile", "productRef": dep}))

    def phase(kind: str, target: str, files: list[str]) -> str:
        isa = {"Sources": "PBXSourcesBuildPhase", "Frameworks": "PBXFrameworksBuildPhase",
               "Resources": "PBXResourcesBuildPhase"}[kind]
        return add(("phase", target, kind), kind, {"isa": isa, "buildActionMask": "2147483647", "files": files,
                                                   "runOnlyForDeploymentPostprocessing": "0"})

    def config_list(owner: str, comment: str, make) -> str:
        configs = [add(("config", owner, c), c, {"isa": "XCBuildConfiguration", "buildSettings": make(c), "name": c})
                   for c in ("Debug", "Release")]
        return add(("configlist", owner), f'Build configuration list for {comment}',
                   {"isa": "XCConfigurationList", "buildConfigurations": configs,
                    "defaultConfigurationIsVisible": "0", "defaultConfigurationName": "Release"})

    proxy = add(("proxy", TESTS), "PBXContainerItemProxy",
                {"isa": "PBXContainerItemProxy", "containerPortal": project_id, "proxyType": "1",
                 "remoteGlobalIDString": app_id, "remoteInfo": NAME})
    dependency = add(("dependency", TESTS), "PBXTargetDependency",
                     {"isa": "PBXTargetDependency", "target": app_id, "targetProxy": proxy})

    objects[app_id] = (NAME, {
        "isa": "PBXNativeTarget",
        "buildConfigurationList": config_list(NAME, f'PBXNativeTarget "{NAME}"', settings_app),
        "buildPhases": [phase("Sources", NAME, app_sources), phase("Frameworks", NAME, framework_files),
                        phase("Resources", NAME, [folder_build])],
        "buildRules": [], "dependencies": [], "name": NAME, "packageProductDependencies": product_deps,
        "productName": NAME, "productReference": app_product, "productType": "com.apple.product-type.application"})
    objects[test_id] = (TESTS, {
        "isa": "PBXNativeTarget",
        "buildConfigurationList": config_list(TESTS, f'PBXNativeTarget "{TESTS}"', settings_tests),
        "buildPhases": [phase("Sources", TESTS, test_sources), phase("Frameworks", TESTS, []),
                        phase("Resources", TESTS, [])],
        "buildRules": [], "dependencies": [dependency], "name": TESTS, "productName": TESTS,
        "productReference": test_product, "productType": "com.apple.product-type.bundle.unit-test"})
    objects[project_id] = ("Project object", {
        "isa": "PBXProject",
        "attributes": {"BuildIndependentTargetsInParallel": "1", "LastSwiftUpdateCheck": "1600",
                       "LastUpgradeCheck": "1600",
                       "TargetAttributes": {app_id: {"CreatedOnToolsVersion": "16.0"},
                                            test_id: {"CreatedOnToolsVersion": "16.0", "TestTargetID": app_id}}},
        "buildConfigurationList": config_list("project", f'PBXProject "{NAME}"', settings_project),
        "compatibilityVersion": "Xcode 14.0", "developmentRegion": "en", "hasScannedForEncodings": "0",
        "knownRegions": ["en", "Base"], "mainGroup": main_group, "packageReferences": [package],
        "productRefGroup": products, "projectDirPath": "", "projectRoot": "", "targets": [app_id, test_id]})

    # Sections in Xcode's order, objects sorted by id within each.
    out = ["// !$*UTF8*$!", "{", "\tarchiveVersion = 1;", "\tclasses = {", "\t};", "\tobjectVersion = 60;",
           "\tobjects = {"]
    for isa in sorted({f["isa"] for _, f in objects.values()}):
        out.append(f"\n/* Begin {isa} section */")
        for i in sorted(k for k, (_, f) in objects.items() if f["isa"] == isa):
            comment, fields = objects[i]
            out.append(f"\t\t{i} /* {comment} */ = {plist(fields, 2)};")
        out.append(f"/* End {isa} section */")
    out += ["\t};", f"\trootObject = {project_id} /* Project object */;", "}", ""]
    return "\n".join(out), scheme(app_id, test_id)


def scheme(app_id: str, test_id: str) -> str:
    def ref(i: str, product: str, name: str) -> str:
        return (f'            <BuildableReference\n               BuildableIdentifier = "primary"\n'
                f'               BlueprintIdentifier = "{i}"\n               BuildableName = "{product}"\n'
                f'               BlueprintName = "{name}"\n               ReferencedContainer = "container:{NAME}.xcodeproj">\n'
                f'            </BuildableReference>\n')
    app = ref(app_id, f"{NAME}.app", NAME)
    test = ref(test_id, f"{TESTS}.xctest", TESTS)
    return f'''<?xml version="1.0" encoding="UTF-8"?>
<Scheme
   LastUpgradeVersion = "1600"
   version = "1.7">
   <BuildAction
      parallelizeBuildables = "YES"
      buildImplicitDependencies = "YES">
      <BuildActionEntries>
         <BuildActionEntry
            buildForTesting = "YES"
            buildForRunning = "YES"
            buildForProfiling = "YES"
            buildForArchiving = "YES"
            buildForAnalyzing = "YES">
{app}         </BuildActionEntry>
      </BuildActionEntries>
   </BuildAction>
   <TestAction
      buildConfiguration = "Release"
      selectedDebuggerIdentifier = "Xcode.DebuggerFoundation.Debugger.LLDB"
      selectedLauncherIdentifier = "Xcode.DebuggerFoundation.Launcher.LLDB"
      shouldUseLaunchSchemeArgsEnv = "YES"
      shouldAutocreateTestPlan = "YES">
      <Testables>
         <TestableReference
            skipped = "NO">
{test.replace("            ", "               ")}         </TestableReference>
      </Testables>
   </TestAction>
   <LaunchAction
      buildConfiguration = "Release"
      selectedDebuggerIdentifier = "Xcode.DebuggerFoundation.Debugger.LLDB"
      selectedLauncherIdentifier = "Xcode.DebuggerFoundation.Launcher.LLDB"
      launchStyle = "0"
      useCustomWorkingDirectory = "NO"
      ignoresPersistentStateOnLaunch = "NO"
      debugDocumentVersioning = "YES"
      debugServiceExtension = "internal"
      allowLocationSimulation = "YES">
      <BuildableProductRunnable
         runnableDebuggingMode = "0">
{app.replace("            ", "         ")}      </BuildableProductRunnable>
   </LaunchAction>
   <ProfileAction
      buildConfiguration = "Release"
      shouldUseLaunchSchemeArgsEnv = "YES"
      savedToolIdentifier = ""
      useCustomWorkingDirectory = "NO"
      debugDocumentVersioning = "YES">
      <BuildableProductRunnable
         runnableDebuggingMode = "0">
{app.replace("            ", "         ")}      </BuildableProductRunnable>
   </ProfileAction>
   <AnalyzeAction
      buildConfiguration = "Debug">
   </AnalyzeAction>
   <ArchiveAction
      buildConfiguration = "Release"
      revealArchiveInOrganizer = "YES">
   </ArchiveAction>
</Scheme>
'''


WORKSPACE = '''<?xml version="1.0" encoding="UTF-8"?>
<Workspace
   version = "1.0">
   <FileRef
      location = "self:">
   </FileRef>
</Workspace>
'''


def outputs() -> dict[Path, str]:
    pbx, sch = build()
    proj = ROOT / f"{NAME}.xcodeproj"
    return {proj / "project.pbxproj": pbx,
            proj / "xcshareddata" / "xcschemes" / f"{NAME}.xcscheme": sch,
            proj / "project.xcworkspace" / "contents.xcworkspacedata": WORKSPACE}


def main() -> int:
    for path, text in outputs().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
