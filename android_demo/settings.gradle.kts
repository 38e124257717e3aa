// The MobileLLM demo app: BenchmarkActivity (headless, launched by `mobilellm device android`)
// and ChatActivity (launcher). `core` is the platform-free Java the app and the JVM tests share.
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()
        mavenCentral()
    }
}

rootProject.name = "MobileLLMDemo"
include(":core", ":app")
