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
        google()        // AGP, AndroidX, LiteRT (com.google.ai.edge.litert)
        mavenCentral()  // ExecuTorch (org.pytorch:executorch-android), Kotlin, JUnit
    }
    // gradle/libs.versions.toml is picked up as the `libs` catalog
}

rootProject.name = "SamEdgeDemo"
include(":app")
