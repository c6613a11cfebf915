plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
}

// Models: `./gradlew :app:copySamModels -PsamEdgeExport=/path/to/export` copies the ExecuTorch /
// TFLite artifacts of a `sam-edge export` directory into src/main/assets (or copy the two files
// named in ModelConstants.kt by hand). They are not committed.
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
    compileSdk = 35

    defaultConfig {
        applicationId = "com.samedge.demo"
        minSdk = 28          // ImageDecoder (EXIF-aware decoding)
        targetSdk = 35
        versionCode = 1
        versionName = "1.0"
        ndk {
            // the ExecuTorch AAR ships arm64-v8a and x86_64
            abiFilters += listOf("arm64-v8a", "x86_64")
        }
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

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
    kotlinOptions {
        jvmTarget = "17"
    }
}

dependencies {
    // ExecuTorch runtime (Module / EValue / Tensor, XNNPACK backend): Maven Central
    implementation("org.pytorch:executorch-android:1.0.1")
    // (its Gradle metadata brings fbjni / soloader, which load libexecutorch.so)
    // LiteRT (TFLite) Interpreter API, package org.tensorflow.lite: Google Maven
    implementation("com.google.ai.edge.litert:litert:1.4.1")

    implementation("androidx.appcompat:appcompat:1.7.0")
    implementation("androidx.activity:activity-ktx:1.9.3")
    implementation("androidx.lifecycle:lifecycle-runtime-ktx:2.8.7")
    implementation("org.jetbrains.kotlinx:kotlinx-coroutines-android:1.9.0")
}
