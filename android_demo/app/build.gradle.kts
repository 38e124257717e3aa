// AGP 9 compiles Kotlin itself (built-in Kotlin): no org.jetbrains.kotlin.android plugin.
plugins {
    alias(libs.plugins.android.application)
}

android {
    namespace = "org.mobilellm.demo"
    compileSdk = 36

    defaultConfig {
        applicationId = "org.mobilellm.demo"
        // ExecuTorch's AAR declares minSdk 23; ONNX Runtime's Java API returns java.util.Optional
        // (OrtSession.Result.get), which Android has from API 24.
        minSdk = 24
        targetSdk = 36
        versionCode = 1
        versionName = "0.1.0"
        // The ExecuTorch AAR ships these two ABIs.
        ndk { abiFilters += listOf("arm64-v8a", "x86_64") }
        // The headless benchmark as an instrumentation test (app/src/androidTest): `am instrument -w
        // org.mobilellm.demo.test/androidx.test.runner.AndroidJUnitRunner`, for device farms.
        testInstrumentationRunner = "androidx.test.runner.AndroidJUnitRunner"
        buildConfigField("String", "EXECUTORCH_VERSION", "\"${libs.versions.executorch.get()}\"")
        buildConfigField("String", "ONNXRUNTIME_VERSION", "\"${libs.versions.onnxruntime.get()}\"")
        buildConfigField("String", "ONNXRUNTIME_GENAI_VERSION", "\"${libs.versions.onnxruntimeGenai.get()}\"")
    }

    buildFeatures { buildConfig = true }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }

    packaging {
        // Both runtimes may bring the NDK's C++ runtime; one copy is enough.
        jniLibs { pickFirsts += "lib/*/libc++_shared.so" }
    }
}

dependencies {
    implementation(project(":core"))
    implementation(libs.executorch.android)
    implementation(libs.onnxruntime.android)
    implementation(libs.onnxruntime.genai.android) // <name>.genai directories (Genai.kt)
    androidTestImplementation(libs.androidx.test.runner)
    androidTestImplementation(libs.androidx.test.core)
    androidTestImplementation(libs.androidx.test.ext.junit)
    androidTestImplementation(libs.junit)
}
