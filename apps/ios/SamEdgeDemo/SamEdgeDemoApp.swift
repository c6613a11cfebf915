import SwiftUI

@main
struct SamEdgeDemoApp: App {
    var body: some Scene {
        WindowGroup {
            ContentView()
                .task {
                    // Benchmark mode without touching the UI, e.g. from Xcode's scheme
                    // ("Arguments Passed On Launch": -SamEdgeBenchmark YES -SamEdgeBenchmarkRuns 50)
                    // or `xcrun devicectl device process launch ... -SamEdgeBenchmark YES`.
                    if BenchmarkConfig.requestedAtLaunch {
                        await BenchmarkRunner.shared.run(BenchmarkConfig.fromLaunchArguments())
                    }
                }
        }
    }
}
