// swift-tools-version:6.2
//
// Hourglass: a distributed task scheduler.
//
// Layering (see docs/architecture.md):
//   HourglassCore   – the pure domain (schedules, ids, leases); Foundation only.
//   HourglassProto  – generated protobuf messages (tools/generate-protos.sh).
//   HourglassRPC    – the hourglass/1 protocol: frames, state machines, calls; no sockets.
//   HourglassTransport – TCP + TLS 1.3 listeners and connections.
//   HourglassStore* – the TaskStore protocol and its SQLite / PostgreSQL backends.
import PackageDescription

let strictSettings: [SwiftSetting] = [
  .enableUpcomingFeature("ExistentialAny")
]

/// The RPC layer's async functions run on their caller's executor instead of hopping to the
/// generic one at every call and return: a call's task prefers its connection's event loop,
/// and each hop made the runtime look that preference up under a lock.
let rpcSettings: [SwiftSetting] =
  strictSettings + [
    .enableUpcomingFeature("NonisolatedNonsendingByDefault")
  ]

let package = Package(
  name: "hourglass",
  platforms: [.macOS(.v15)],
  products: [
    .library(name: "HourglassCore", targets: ["HourglassCore"]),
    .library(name: "HourglassRPC", targets: ["HourglassRPC"]),
    .library(name: "HourglassTransport", targets: ["HourglassTransport"]),
    .library(name: "HourglassClient", targets: ["HourglassClient"]),
    .library(name: "CHourglassClient", targets: ["CHourglassClient"]),
    .executable(name: "hourglass", targets: ["hourglass"]),
    .executable(name: "hourglass-bench", targets: ["hourglass-bench"]),
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
    .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
    .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
    .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
    .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
    .package(url: "https://github.com/apple/swift-collections.git", from: "1.6.0"),
    .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
    .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
    .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
    .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
    .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
    .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
    .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
  ],
  targets: [
    // MARK: Domain
    .target(
      name: "HourglassCore",
      swiftSettings: strictSettings
    ),

    // MARK: Protocol
    .target(
      name: "HourglassProto",
      dependencies: [.product(name: "SwiftProtobuf", package: "swift-protobuf")],
      exclude: []
    ),
    .target(
      name: "HourglassRPC",
      dependencies: [
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        .product(name: "DequeModule", package: "swift-collections"),
        .product(name: "Logging", package: "swift-log"),
      ],
      swiftSettings: rpcSettings
    ),
    .target(
      name: "HourglassTransport",
      dependencies: [
        "HourglassRPC",
        "HourglassCertificates",
        .product(name: "NIOTLS", package: "swift-nio"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOSSL", package: "swift-nio-ssl"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
      ],
      swiftSettings: rpcSettings
    ),

    .target(
      name: "HourglassCertificates",
      dependencies: [
        .product(name: "X509", package: "swift-certificates"),
        .product(name: "Crypto", package: "swift-crypto"),
        .product(name: "SwiftASN1", package: "swift-asn1"),
      ],
      swiftSettings: strictSettings
    ),

    // MARK: Storage
    .target(
      name: "HourglassStore",
      dependencies: ["HourglassCore"],
      swiftSettings: strictSettings
    ),
    .target(
      name: "HourglassStoreSQLite",
      dependencies: [
        "HourglassStore",
        .product(name: "GRDB", package: "GRDB.swift"),
        // The system SQLite's C API: the one statement bound without GRDB (TaskInsertStatement), and
        // sqlite3_wal_hook for the checkpointer.
        .product(name: "GRDBSQLite", package: "GRDB.swift"),
        .product(name: "Logging", package: "swift-log"),
      ],
      swiftSettings: strictSettings
    ),
    .target(
      name: "HourglassStorePostgres",
      dependencies: [
        "HourglassStore",
        .product(name: "PostgresNIO", package: "postgres-nio"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "Logging", package: "swift-log"),
      ],
      swiftSettings: strictSettings
    ),
    .target(
      name: "HourglassStoreConformance",
      dependencies: ["HourglassStore"],
      swiftSettings: strictSettings
    ),
    .target(
      name: "HourglassPostgresLauncher",
      swiftSettings: strictSettings
    ),
    .executableTarget(
      name: "hourglass-store-crashtest",
      dependencies: ["HourglassCore", "HourglassStore", "HourglassStoreSQLite"],
      swiftSettings: strictSettings
    ),

    // MARK: Scheduling
    .target(
      name: "HourglassExecutor",
      dependencies: [
        "HourglassCore",
        "HourglassRPC",
        "HourglassTransport",
        "HourglassProto",
        .product(name: "Crypto", package: "swift-crypto"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "CoreMetrics", package: "swift-metrics"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        .product(name: "NIOCore", package: "swift-nio"),
      ],
      swiftSettings: strictSettings
    ),
    .target(
      name: "HourglassCoordinator",
      dependencies: [
        "HourglassCore",
        "HourglassProto",
        "HourglassRPC",
        "HourglassTransport",
        "HourglassStore",
        .product(name: "Crypto", package: "swift-crypto"),
        .product(name: "DequeModule", package: "swift-collections"),
        .product(name: "HeapModule", package: "swift-collections"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "CoreMetrics", package: "swift-metrics"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        .product(name: "NIOCore", package: "swift-nio"),
      ],
      swiftSettings: strictSettings
    ),

    // MARK: Client (docs/client.md)
    .target(
      name: "HourglassClient",
      dependencies: [
        "HourglassCore",
        "HourglassProto",
        "HourglassRPC",
        "HourglassTransport",
        .product(name: "Logging", package: "swift-log"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
      ],
      swiftSettings: strictSettings
    ),

    // MARK: Observability (docs/operations.md)
    // The Prometheus side: the /metrics listener, the factory with Hourglass's histogram
    // buckets, and the JSON log handler. Libraries above depend only on the swift-metrics and
    // swift-log APIs; only executables bootstrap anything.
    .target(
      name: "HourglassObservability",
      dependencies: [
        .product(name: "Prometheus", package: "swift-prometheus"),
        .product(name: "CoreMetrics", package: "swift-metrics"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOHTTP1", package: "swift-nio"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
      ],
      swiftSettings: strictSettings
    ),

    // MARK: Executables
    .executableTarget(
      name: "hourglass",
      dependencies: [
        "HourglassClient",
        "HourglassCore",
        "HourglassCoordinator",
        "HourglassExecutor",
        "HourglassObservability",
        "HourglassStore",
        "HourglassStoreSQLite",
        "HourglassStorePostgres",
        "HourglassCertificates",
        .product(name: "Prometheus", package: "swift-prometheus"),
        .product(name: "CoreMetrics", package: "swift-metrics"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        "HourglassProto",
        "HourglassRPC",
        "HourglassTransport",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
        .product(name: "Logging", package: "swift-log"),
      ],
      swiftSettings: strictSettings
    ),
    .executableTarget(
      name: "hourglass-bench",
      dependencies: [
        "HourglassCoordinator",
        "HourglassCore",
        "HourglassProto",
        "HourglassRPC",
        "HourglassTransport",
        "HourglassStore",
        "HourglassStoreSQLite",
        "HourglassStorePostgres",
        "HourglassPostgresLauncher",
        "HourglassCertificates",
        "HourglassExecutor",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOSSL", package: "swift-nio-ssl"),
        .product(name: "NIOExtras", package: "swift-nio-extras"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        .product(name: "DequeModule", package: "swift-collections"),
      ],
      swiftSettings: strictSettings
    ),

    // MARK: C client (docs/c-client.md)
    // Strict C warnings are checked by tools/c-client-check.sh, not with unsafeFlags here, so
    // that the package stays usable as a dependency.
    .target(
      name: "CHourglassClient",
      cSettings: [.headerSearchPath("generated")],
      linkerSettings: [.linkedLibrary("ssl"), .linkedLibrary("crypto"), .linkedLibrary("protobuf-c")]
    ),
    .target(
      name: "HourglassInterop",
      dependencies: [
        "HourglassRPC",
        "HourglassTransport",
        "HourglassProto",
        "HourglassCertificates",
        .product(name: "Crypto", package: "swift-crypto"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
      ],
      swiftSettings: strictSettings
    ),
    .executableTarget(
      name: "hourglass-c-interop-server",
      dependencies: ["HourglassInterop"],
      swiftSettings: strictSettings
    ),

    // MARK: Tests
    // What several test targets share (child processes, named pipes scripts signal through, a log
    // handler to watch logs with, a throwaway PostgreSQL server around a suite); tests only.
    .target(
      name: "HourglassTestSupport",
      dependencies: ["HourglassPostgresLauncher", .product(name: "Logging", package: "swift-log")],
      path: "Tests/HourglassTestSupport",
      swiftSettings: strictSettings
    ),
    .testTarget(
      name: "HourglassExecutorTests",
      dependencies: [
        "HourglassTestSupport",
        "HourglassExecutor",
        "HourglassCore",
        .product(name: "MetricsTestKit", package: "swift-metrics"),
        "HourglassRPC",
        "HourglassProto",
        .product(name: "Logging", package: "swift-log"),
      ],
      swiftSettings: strictSettings
    ),
    .testTarget(
      name: "HourglassCoordinatorTests",
      dependencies: [
        "HourglassTestSupport",
        "HourglassCoordinator",
        "HourglassObservability",
        .product(name: "Prometheus", package: "swift-prometheus"),
        .product(name: "CoreMetrics", package: "swift-metrics"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        "HourglassExecutor",
        "HourglassStore",
        "HourglassStoreSQLite",
        "HourglassStorePostgres",
        "HourglassPostgresLauncher",
        "HourglassCertificates",
        "HourglassTransport",
        "HourglassRPC",
        "HourglassProto",
        "HourglassCore",
        .product(name: "Logging", package: "swift-log"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
      ],
      swiftSettings: strictSettings
    ),
    .testTarget(
      name: "HourglassClientTests",
      dependencies: [
        "HourglassTestSupport",
        "HourglassClient",
        "HourglassCoordinator",
        "HourglassStoreSQLite",
        "HourglassCertificates",
        "HourglassTransport",
        "HourglassRPC",
        "HourglassProto",
        "hourglass",
        .product(name: "Logging", package: "swift-log"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
      ],
      swiftSettings: strictSettings
    ),
    .testTarget(
      name: "HourglassObservabilityTests",
      dependencies: [
        "HourglassObservability",
        .product(name: "Logging", package: "swift-log"),
      ],
      swiftSettings: strictSettings
    ),
    .testTarget(
      name: "HourglassCoreTests",
      dependencies: ["HourglassCore", "HourglassTestSupport"],
      swiftSettings: strictSettings
    ),
    .testTarget(
      name: "HourglassRPCTests",
      dependencies: [
        "HourglassRPC",
        "HourglassProto",
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOEmbedded", package: "swift-nio"),
        .product(name: "NIOTestUtils", package: "swift-nio"),
        .product(name: "Logging", package: "swift-log"),
      ],
      resources: [.copy("Fuzz Corpus")],
      swiftSettings: strictSettings
    ),
    .testTarget(
      name: "HourglassTransportTests",
      dependencies: [
        "HourglassRPC",
        "HourglassTransport",
        "HourglassProto",
        "HourglassCertificates",
        .product(name: "Logging", package: "swift-log"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        .product(name: "NIOTLS", package: "swift-nio"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOSSL", package: "swift-nio-ssl"),
      ],
      swiftSettings: strictSettings
    ),
    .testTarget(
      name: "HourglassStoreSQLiteTests",
      dependencies: [
        "HourglassTestSupport",
        "HourglassCore",
        "HourglassStore",
        "HourglassStoreSQLite",
        "HourglassStoreConformance",
        "hourglass-store-crashtest",
        .product(name: "GRDB", package: "GRDB.swift"),
      ],
      swiftSettings: strictSettings
    ),
    .testTarget(
      name: "HourglassStorePostgresTests",
      dependencies: [
        "HourglassTestSupport",
        "HourglassCore",
        "HourglassStore",
        "HourglassStorePostgres",
        "HourglassStoreConformance",
        "HourglassPostgresLauncher",
        .product(name: "PostgresNIO", package: "postgres-nio"),
      ],
      swiftSettings: strictSettings
    ),
    .testTarget(
      name: "CHourglassClientTests",
      dependencies: [
        "HourglassCoordinator",
        "HourglassStoreSQLite",
        "CHourglassClient",
        "HourglassInterop",
        "HourglassRPC",
        "HourglassTransport",
        "HourglassProto",
        "HourglassCertificates",
        .product(name: "Logging", package: "swift-log"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOSSL", package: "swift-nio-ssl"),
        .product(name: "NIOTLS", package: "swift-nio"),
        .product(name: "Crypto", package: "swift-crypto"),
      ],
      swiftSettings: strictSettings
    ),
  ],
  swiftLanguageModes: [.v6]
)
