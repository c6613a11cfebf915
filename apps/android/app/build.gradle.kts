import org.jetbrains.kotlin.gradle.dsl.JvmTarget

// Not compiled on the machine this was written on (no Android SDK there): see ../README.md,
// "What was verified here". Versions: ../gradle/libs.versions.toml.
plugins {
    alias(libs.plugins.android.application)
    alias(libs.plugins.kotlin.android)
}

// Models: `sam-edge app-bundle --artifacts DIR` copies the two files named in ModelConstants.kt into
// src/main/assets (and regenerates ModelConstants.kt). For benchmark mode, every encoder_*/decoder_*
// model of an export directory can be copied with
// `./gradlew :app:copySamModels -PsamEdgeExport=/path/to/export`. Models are never committed.
val samEdgeExport = providers.gradleProperty("samEdgeExport")

tasks.register<Copy>("copySamModels") {
    description = "Copy encoder_*/decoder_* .pte and .tflite files of a sam-edge export directory into assets"
    from(samEdgeExport.map { file(it) }) {
        include("encoder_*.pte", "decoder_*.pte", "encoder_*.tflite", "decoder_*.tflite", "manifest.json")
    }
    into(layout.projectDirectory.dir("src/main/assets"))
}

android {
    namespace = "com.samedge.demo"
    compileSdk = 36

    defaultConfig {
        applicationId = "com.samedge.demo"
        minSdk = 28          // ImageDecoder (EXIF-aware decoding)
        targetSdk = 36
        versionCode = 1
        versionName = "1.0"
        testInstrumentationRunner = "androidx.test.runner.AndroidJUnitRunner"
        ndk {
            // the ExecuTorch AAR ships arm64-v8a and x86_64 (an x86_64 emulator runs the instrumented test)
            abiFilters += listOf("arm64-v8a", "x86_64")
        }
        // The runtime versions this APK carries, from the version catalog: ModelCheck compares them
        // with ModelConstants.MIN_RUNTIME_VERSION at load.
        buildConfigField("String", "EXECUTORCH_VERSION", "\"${libs.versions.executorch.get()}\"")
        buildConfigField("String", "LITERT_VERSION", "\"${libs.versions.litert.get()}\"")
    }

    buildFeatures {
        buildConfig = true
    }

    buildTypes {
        release {
            isMinifyEnabled = false
        }
    }

    androidResources {
        // models are copied to files/ at first start (ExecuTorch loads from a path); keep them
        // uncompressed anyway so LiteRT could map them straight from the APK
        noCompress += listOf("pte", "tflite")
    }

    packaging {
        jniLibs {
            // fbjni (ExecuTorch's dependency) ships libc++_shared.so; keep one copy if another AAR does too
            pickFirsts += "**/libc++_shared.so"
        }
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
}

kotlin {
    compilerOptions {
        jvmTarget.set(JvmTarget.JVM_17)
    }
}

dependencies {
    // ExecuTorch runtime (Module / EValue / Tensor, XNNPACK backend); its Gradle metadata brings
    // fbjni and soloader's nativeloader, which load libexecutorch.so
    implementation(libs.executorch.android)
    // LiteRT (TFLite) Interpreter API, package org.tensorflow.lite
    implementation(libs.litert)

    implementation(libs.androidx.appcompat)
    implementation(libs.androidx.activity.ktx)
    implementation(libs.androidx.lifecycle.runtime.ktx)
    implementation(libs.kotlinx.coroutines.android)

    // JVM unit tests of the pure Kotlin files (ModelCheck, ImageMath, MaskMath): ./gradlew :app:testDebugUnitTest
    testImplementation(libs.junit)

    // Instrumented test (golden mask on the sample photo): ./gradlew :app:connectedDebugAndroidTest
    androidTestImplementation(libs.junit)
    androidTestImplementation(libs.androidx.test.core)
    androidTestImplementation(libs.androidx.test.runner)
    androidTestImplementation(libs.androidx.test.ext.junit)
}
