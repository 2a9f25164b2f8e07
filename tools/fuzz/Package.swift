// swift-tools-version:6.2
//
// The libFuzzer harness for the hourglass/1 frame decoder and the server's connection handler.
// A separate package so that the main build never sees `-sanitize=fuzzer`; built and run by
// run.sh (see docs/testing.md, "Fuzzing the frame decoder").
import PackageDescription

let package = Package(
  name: "hourglass-fuzz",
  platforms: [.macOS(.v15)],
  dependencies: [
    .package(name: "hourglass", path: "../.."),
    .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
  ],
  targets: [
    .executableTarget(
      name: "FuzzFrameDecoder",
      dependencies: [
        .product(name: "HourglassRPC", package: "hourglass"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOEmbedded", package: "swift-nio"),
        .product(name: "Logging", package: "swift-log"),
      ],
      // The same settings as the test target that replays the corpus, so the shared harness
      // text compiles identically in both places.
      swiftSettings: [.enableUpcomingFeature("ExistentialAny")]
    )
  ],
  swiftLanguageModes: [.v6]
)
