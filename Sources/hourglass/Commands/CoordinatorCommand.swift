import ArgumentParser
import Foundation
import HourglassCoordinator
import HourglassStore
import HourglassStorePostgres
import HourglassStoreSQLite
import HourglassTransport
import Logging
import ServiceLifecycle

/// `hourglass coordinator`: runs the server on a store, listening for clients and executors.
struct CoordinatorCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "coordinator",
    abstract: "Run a coordinator: the task service, the executor streams and the dispatcher."
  )

  @Option(help: "The store: sqlite:PATH, or postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE.")
  var store: String

  @Option(help: "Address to listen on, HOST:PORT.")
  var listen: String = "127.0.0.1:7443"

  @Option(help: "PEM file of the CA that signs client and executor certificates.")
  var ca: String

  @Option(help: "PEM file of this coordinator's certificate.")
  var cert: String

  @Option(help: "PEM file of this coordinator's private key.")
  var key: String

  @Option(
    help: """
      This coordinator's name, in logs and in the executors' Registered message; on PostgreSQL, \
      its name in the cluster: unique to each coordinator, and kept across restarts (default: the host name).
      """)
  var id: String?

  @Option(
    help: """
      On PostgreSQL: the HOST:PORT executors reach this coordinator at. The cluster announces it \
      to every executor, which then connects here without being given the address.
      """)
  var advertise: String?

  @Option(help: "Lease length in seconds.")
  var leaseSeconds: Double = 30

  @Option(help: "Largest executor clock skew, in milliseconds, before it gets no leases.")
  var skewBoundMs: Int = 500

  @Option(
    help: """
      On PostgreSQL: how far this coordinator's clock may be from the database's, in \
      milliseconds, before it stops dispatching; at most half of --skew-bound-ms, which is the \
      default. 0 does not check.
      """)
  var clusterClockBoundMs: Int?

  @Option(
    help: """
      How far ahead of its due time a run may be leased, in milliseconds; the executor holds it \
      until it is due, so the lease's commit and push are not part of its lateness. 0 leases runs \
      only once due.
      """)
  var leaseAheadMs: Double = 5

  @Option(
    help: """
      How long a finished task (completed, or dead after its last attempt) is kept, in hours from \
      its last run; then it and its runs are purged. 0 keeps finished tasks for ever.
      """)
  var finishedTaskRetentionHours: Double = 168

  @Option(help: "How long a deleted task's row is kept before it is purged, in hours (it is invisible at once).")
  var deletedTaskRetentionHours: Double = 1

  @Option(help: "How long a recurring task keeps its finished runs, in hours before its latest; 0 keeps every run.")
  var runHistoryRetentionHours: Double = 168

  @Option(
    help: """
      SQLite only: the writer connection's page cache in MiB. Every lease and result runs on it; \
      give it room for the store's working set (a million tasks: about 600).
      """)
  var sqliteWriterCacheMib: Int = 1024

  @Option(help: "File of users' bearer tokens, one \"TOKEN USER_ID\" (or \"sha256:HEX USER_ID\") per line.")
  var tokens: String?

  @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
  var logLevel: String = "info"

  @OptionGroup var observability: ObservabilityOptions

  func validate() throws {
    guard finishedTaskRetentionHours >= 0, deletedTaskRetentionHours >= 0, runHistoryRetentionHours >= 0 else {
      throw ValidationError("the --…-retention-hours options must not be negative")
    }
    if let clusterClockBoundMs {
      guard clusterClockBoundMs >= 0 else { throw ValidationError("--cluster-clock-bound-ms must not be negative") }
      guard clusterClockBoundMs <= skewBoundMs / 2 else { throw ValidationError("--cluster-clock-bound-ms must be at most half of --skew-bound-ms") }
    }
    guard sqliteWriterCacheMib >= 0 else { throw ValidationError("--sqlite-writer-cache-mib must not be negative") }
    if advertise != nil, !store.hasPrefix("postgres") {
      throw ValidationError("--advertise applies to a PostgreSQL store (a cluster); a SQLite store has one coordinator")
    }
    if let advertise, HostPort.parseDialable(advertise) == nil {
      throw ValidationError("--advertise: expected HOST:PORT with a host and a port other than 0, got \(advertise)")
    }
  }

  /// Hours as microseconds.
  static func micros(hours: Double) -> Int64 { Int64(hours * 3_600_000_000) }

  func run() async throws {
    observability.bootstrapLogging()
    var logger = Logger(label: "hourglass.coordinator")
    logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
    let (host, port) = try Self.hostPort(listen, option: "--listen")
    let credentials = try TLSCredentials(caFile: ca, certificateFile: cert, keyFile: key)
    let taskStore = try await Self.openStore(store, sqliteWriterCacheMiB: sqliteWriterCacheMib, logger: logger)
    var configuration = CoordinatorConfiguration.defaults
    configuration.coordinatorID = id ?? ProcessInfo.processInfo.hostName
    configuration.advertiseAddress = advertise
    if advertise == nil, taskStore is any PartitionLeasing {
      logger.notice(
        "no --advertise address: executors of the cluster reach this coordinator only if they are given its address with --coordinator")
    }
    configuration.leaseDurationMicros = Int64(leaseSeconds * 1_000_000)
    configuration.skewBoundMicros = Int64(skewBoundMs) * 1000
    // In microseconds, so that half of a 1 ms skew bound is still a bound, not 0 (no check).
    let clockBoundMicros = clusterClockBoundMs.map { Int64($0) * 1000 } ?? Int64(skewBoundMs) * 1000 / 2
    configuration.clusterClockBoundMicros = clockBoundMicros == 0 ? nil : clockBoundMicros
    configuration.leaseAheadMicros = Int64(leaseAheadMs * 1000)
    configuration.runHistoryRetentionMicros = runHistoryRetentionHours == 0 ? nil : Self.micros(hours: runHistoryRetentionHours)
    configuration.finishedTaskRetentionMicros = finishedTaskRetentionHours == 0 ? nil : Self.micros(hours: finishedTaskRetentionHours)
    configuration.deletedTaskRetentionMicros = Self.micros(hours: deletedTaskRetentionHours)
    if let tokens {
      configuration.tokens = try BearerTokens.load(path: tokens)
      logger.info("bearer tokens loaded", metadata: ["hourglass.tokens": "\(configuration.tokens.count)"])
    }
    let metrics = try await observability.metrics(logger: logger)
    let coordinator = try Coordinator(
      configuration: configuration,
      store: taskStore,
      tls: .init(host: host, port: port, credentials: credentials),
      logger: logger,
      metricsFactory: metrics.factory
    )
    var services: [any Service] = [coordinator]
    if let server = metrics.server { services.append(server) }
    let group = ServiceGroup(
      services: services,
      gracefulShutdownSignals: [.sigterm, .sigint],
      cancellationSignals: [],
      logger: logger
    )
    try await group.run()
    try await taskStore.close()
  }

  /// Parses `HOST:PORT` (IPv6 as `[::1]:PORT`).
  static func hostPort(_ text: String, option: String) throws -> (String, Int) {
    guard let (host, port) = HostPort.parse(text) else {
      throw ValidationError("\(option): expected HOST:PORT, got \(text)")
    }
    return (host.isEmpty ? "0.0.0.0" : host, port)
  }

  /// Opens the store named by a `sqlite:` path or a PostgreSQL URL.
  static func openStore(_ url: String, sqliteWriterCacheMiB: Int? = nil, logger: Logger) async throws -> any TaskStore {
    if url.hasPrefix("sqlite:") {
      let path = String(url.dropFirst("sqlite:".count))
      guard !path.isEmpty else { throw ValidationError("--store: sqlite: needs a path") }
      let directory = (path as NSString).deletingLastPathComponent
      if !directory.isEmpty {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
      }
      var configuration = SQLiteTaskStore.Configuration.defaults(path: path)
      if let sqliteWriterCacheMiB { configuration.cacheSizeKiB = sqliteWriterCacheMiB * 1024 }
      return try await SQLiteTaskStore(configuration: configuration, logger: logger)
    }
    if url.hasPrefix("postgres://") || url.hasPrefix("postgresql://") {
      guard let components = URLComponents(string: url), let host = components.host, let user = components.user else {
        throw ValidationError("--store: expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE")
      }
      let database = String(components.path.drop { $0 == "/" })
      var configuration = PostgresTaskStore.Configuration.defaults(
        host: host, port: components.port ?? 5432, username: user, database: database.isEmpty ? user : database)
      configuration.password = components.password
      return try await PostgresTaskStore(configuration: configuration, logger: logger)
    }
    throw ValidationError("--store: expected sqlite:PATH or a postgres:// URL, got \(url)")
  }
}
