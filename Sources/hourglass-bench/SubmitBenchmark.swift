import ArgumentParser
import Foundation
import HourglassCertificates
import HourglassCoordinator
import HourglassCore
import HourglassPostgresLauncher
import HourglassProto
import HourglassRPC
import HourglassStore
import HourglassStorePostgres
import HourglassStoreSQLite
import HourglassTransport
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import SwiftProtobuf

/// `hourglass-bench submit`: acknowledged Schedule RPCs per second through the whole path — TLS,
/// the RPC layer, identity, validation, group commit to SQLite (synchronous=FULL) or, with
/// `--backend postgres`, to a throwaway PostgreSQL server — with tasks sharing one binary (stored
/// once), beside the same store's batched-insert ceiling.
struct SubmitBenchmark: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "submit",
    abstract: "Schedule RPCs/s through TLS, RPC, validation and SQLite group commit."
  )

  @Option(
    help:
      "The store's synchronous setting: FULL (the default, what the goal is measured with) or, to see what the syncs cost, NORMAL or OFF (neither is durable on power loss)."
  )
  var synchronous: String = "FULL"

  @Option(help: "Seconds to measure.")
  var duration: Double = 5

  @Option(help: "Connections.")
  var connections: Int = 4

  @Option(help: "Calls in flight per connection.")
  var inFlight: Int = 64

  @Option(help: "Folder for the SQLite file (a temporary one by default).")
  var directory: String?

  @Option(
    help:
      "sqlite (what the goal is measured with), or postgres (a throwaway server the benchmark starts in its folder, on the same cores, synchronous_commit=on)."
  )
  var backend: StoreBenchmark.Backend = .sqlite

  @Flag(
    inversion: .prefixedNo,
    help: "Send an idempotency key with every Schedule, minted as HourglassClient and the CLI mint them.")
  var idempotencyKeys = true

  @Option(help: "Rows for the ceiling: the same tasks written by one TaskStore.insert call (one transaction); 0 skips it.")
  var ceilingRows = 50_000

  @Option(help: "Event-loop threads for the clients (their own group, as if they were other processes).")
  var clientThreads = System.coreCount

  @Flag(help: "Print JSON.")
  var json = false

  @Option(
    help:
      "How the clients call: async (tasks preferring their connection's loop, as the figures in docs/benchmarks.md) or loop (callbacks on their event loops, no task per call)."
  )
  var clientAPI: ClientAPI = .async

  enum ClientAPI: String, ExpressibleByArgument {
    case loop, async
  }

  func run() async throws {
    var logger = Logger(label: "bench.submit")
    logger.logLevel = .error
    let folder = directory ?? NSTemporaryDirectory() + "hourglass-submit-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    defer { if directory == nil { try? FileManager.default.removeItem(atPath: folder) } }
    let ca = try DevelopmentCA(name: "bench CA")
    let server = try ca.issue(name: "coordinator", role: .coordinator, dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"])
    let user = try ca.issue(name: "bench-user", role: .user)
    let serverCredentials = TLSCredentials(
      trustedCAPEM: ca.authority.certificatePEM, certificatePEM: server.certificatePEM, privateKeyPEM: server.privateKeyPEM)
    let userCredentials = TLSCredentials(trustedCAPEM: ca.authority.certificatePEM, certificatePEM: user.certificatePEM, privateKeyPEM: user.privateKeyPEM)
    guard let mode = SQLiteTaskStore.Synchronous(rawValue: synchronous.uppercased()) else {
      throw ValidationError("--synchronous: expected FULL, NORMAL or OFF, got \(synchronous)")
    }
    let postgres = backend == .postgres ? try await BenchPostgres.start(in: folder) : nil
    defer { postgres?.stop(immediately: true, removingDirectory: false) }
    let store = try await Self.openStore(named: "tasks", postgres: postgres, folder: folder, synchronous: mode, logger: logger)
    let coordinator = try Coordinator(
      configuration: .defaults, store: store.store, tls: .init(host: "127.0.0.1", port: 0, credentials: serverCredentials), logger: logger)
    let group = ServiceGroup(services: [coordinator], gracefulShutdownSignals: [], cancellationSignals: [], logger: logger)

    var request = Hourglass_V1_ScheduleRequest()
    request.taskBlob = Data(repeating: 0x41, count: 900)  // ~1 KB tasks sharing one binary
    var once = Hourglass_V1_OnceSchedule()
    once.instant = Google_Protobuf_Timestamp(seconds: Int64(Date().timeIntervalSince1970) + 86_400)
    request.schedule.once = once
    let method = MethodDescriptor(service: "hourglass.v1.TaskService", method: "Schedule")
    let seconds = duration
    let (connections, inFlight) = (self.connections, self.inFlight)
    var report = BenchmarkReport(benchmark: "submit")
    let keys = idempotencyKeys
    report.parameters = [
      "duration_s": "\(duration)", "connections": "\(connections)", "in_flight": "\(inFlight)",
      "store": postgres == nil ? "sqlite synchronous=\(mode.rawValue)" : "postgres synchronous_commit=on",
      "idempotency_keys": "\(keys)", "client_threads": "\(clientThreads)", "client_api": clientAPI.rawValue,
    ]
    // The clients get their own event loops, as they would in other processes. Sharing the
    // coordinator's group put every server connection on one loop (the group hands out loops
    // round-robin, alternating between client and server channels), leaving the other idle.
    let clientGroup = MultiThreadedEventLoopGroup(numberOfThreads: clientThreads)

    try await withThrowingTaskGroup(of: Void.self) { tasks in
      tasks.addTask { try await group.run() }
      let port = try await coordinator.port()!
      let transports = try (0..<connections).map { _ in
        try RPCTLSConnection(configuration: .init(host: "127.0.0.1", port: port, credentials: userCredentials), group: clientGroup, logger: logger)
      }
      for transport in transports {
        let _: Hourglass_V1_ScheduleResponse = try await RPCClient(transport: transport).unary(method, request: request)
      }
      let request = request
      let result: LoadResult
      switch clientAPI {
      case .loop:
        // Made and completed on the clients' event loops by callbacks, with no task per call.
        result = try await CallbackLoad<Hourglass_V1_ScheduleRequest, Hourglass_V1_ScheduleResponse>.run(
          transports, method: method, inFlight: inFlight, seconds: seconds
        ) {
          var request = request
          if keys { Self.giveFreshKey(&request) }
          return request
        }
      case .async:
        result = try await TaskLoad<Hourglass_V1_ScheduleRequest, Hourglass_V1_ScheduleResponse>.run(
          transports, method: method, inFlight: inFlight, seconds: seconds, request: request, prepare: keys ? Self.giveFreshKey : nil)
      }
      report.results.append(result.row("schedule_rpc_tls_\(connections)x\(inFlight)"))
      let commits = store.statistics()
      report.parameters["group_commit"] = "\(commits.items) rows in \(commits.batches) transactions, largest \(commits.largestBatch)"
      for transport in transports { await transport.close() }
      await group.triggerGracefulShutdown()
      try await tasks.waitForAll()
    }
    try await store.store.close()
    try await clientGroup.shutdownGracefully()
    if ceilingRows > 0 {
      let ceilingStore = try await Self.openStore(named: "ceiling", postgres: postgres, folder: folder, synchronous: .full, logger: logger)
      report.results.append(
        try await Self.ceiling(rows: ceilingRows, store: ceilingStore.store, blob: Array(request.taskBlob), keys: keys, backend: backend))
    }
    report.print(json: json)
  }

  /// Gives a request a new idempotency key, minted as HourglassClient and the CLI mint one for
  /// every Schedule.
  @Sendable static func giveFreshKey(_ request: inout Hourglass_V1_ScheduleRequest) {
    request.idempotencyKey = IdempotencyKey.generate()
  }

  /// A fresh store called `name`: a SQLite file in `folder`, or a database of `postgres`; with
  /// its group commit's statistics.
  static func openStore(
    named name: String, postgres: ThrowawayPostgres?, folder: String, synchronous: SQLiteTaskStore.Synchronous, logger: Logger
  ) async throws -> (store: any TaskStore, statistics: @Sendable () -> GroupCommitStatistics) {
    if let postgres {
      let configuration = try await BenchPostgres.coordinatorStore(on: postgres, database: name)
      let store = try await PostgresTaskStore(configuration: configuration, logger: logger)
      return (store, { store.groupCommitStatistics })
    }
    var configuration = SQLiteTaskStore.Configuration.defaults(path: folder + "/\(name).db")
    configuration.synchronous = synchronous
    let store = try await SQLiteTaskStore(configuration: configuration, logger: logger)
    return (store, { store.groupCommitStatistics })
  }

  /// The store's batched-insert ceiling for the rows a Schedule writes: the same kind of task
  /// (same blob, spec, owner, key or not) written by one `insert` call, so one transaction and
  /// one sync for all of them, into `store`, a fresh one beside the benchmark's.
  static func ceiling(
    rows: Int, store: any TaskStore, blob: [UInt8], keys: Bool, backend: StoreBenchmark.Backend
  ) async throws -> [String: BenchmarkValue] {
    let now = Date().unixMicros
    let due = now + 86_400_000_000
    let spec = StoredTaskSpec(schedule: .once(at: due), retry: .defaults).encoded()
    let taskBlob = TaskBlob(blob)
    let tasks = (0..<rows).map { _ in
      NewTask(
        id: TaskID.now(), owner: "bench-user", operatorName: "exec", blob: taskBlob, scheduleSpec: spec, maxAttempts: 3,
        firstRunMicros: due, createdAtMicros: now, idempotencyKey: keys ? IdempotencyKey.generate() : nil)
    }
    let start = ContinuousClock.now
    try await store.insert(tasks)
    let elapsed = ContinuousClock.now - start
    try await store.close()
    let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    return ["name": .string("\(backend.rawValue)_ceiling_one_insert_call"), "rows": .int(rows), "rows_per_s": .double(Double(rows) / seconds)]
  }
}
