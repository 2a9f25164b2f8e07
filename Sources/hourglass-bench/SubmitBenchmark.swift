import ArgumentParser
import Foundation
import HourglassCertificates
import HourglassCoordinator
import HourglassProto
import HourglassRPC
import HourglassStoreSQLite
import HourglassTransport
import Logging
import ServiceLifecycle
import SwiftProtobuf

/// `hourglass-bench submit`: acknowledged Schedule RPCs per second through the whole path — TLS,
/// the RPC layer, identity, validation, group commit to SQLite (synchronous=FULL) — with tasks
/// sharing one binary (stored once), beside the same store's batched-insert ceiling.
struct SubmitBenchmark: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "submit",
    abstract: "Schedule RPCs/s through TLS, RPC, validation and SQLite group commit."
  )

  @Option(help: "Seconds to measure.")
  var duration: Double = 5

  @Option(help: "Connections.")
  var connections: Int = 4

  @Option(help: "Calls in flight per connection.")
  var inFlight: Int = 64

  @Option(help: "Folder for the SQLite file (a temporary one by default).")
  var directory: String?

  @Flag(help: "Print JSON.")
  var json = false

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
    let store = try await SQLiteTaskStore(configuration: .defaults(path: folder + "/tasks.db"), logger: logger)
    let coordinator = try Coordinator(
      configuration: .defaults, store: store, tls: .init(host: "127.0.0.1", port: 0, credentials: serverCredentials), logger: logger)
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
    report.parameters = ["duration_s": "\(duration)", "connections": "\(connections)", "in_flight": "\(inFlight)", "store": "sqlite synchronous=FULL"]

    try await withThrowingTaskGroup(of: Void.self) { tasks in
      tasks.addTask { try await group.run() }
      let port = try await coordinator.port()!
      let transports = try (0..<connections).map { _ in
        try RPCTLSConnection(configuration: .init(host: "127.0.0.1", port: port, credentials: userCredentials), logger: logger)
      }
      for transport in transports {
        let _: Hourglass_V1_ScheduleResponse = try await RPCClient(transport: transport).unary(method, request: request)
      }
      let request = request
      let start = ContinuousClock.now
      let end = start + .milliseconds(Int64(seconds * 1000))
      let latencies = try await withThrowingTaskGroup(of: [Duration].self) { calls in
        for transport in transports {
          let client = RPCClient(transport: transport)
          for _ in 0..<inFlight {
            calls.addTask {
              var samples: [Duration] = []
              while ContinuousClock.now < end {
                let t0 = ContinuousClock.now
                let _: Hourglass_V1_ScheduleResponse = try await client.unary(method, request: request)
                samples.append(ContinuousClock.now - t0)
              }
              return samples
            }
          }
        }
        var all: [Duration] = []
        for try await samples in calls { all += samples }
        return all
      }
      let result = LoadResult(latencies: latencies, elapsed: ContinuousClock.now - start)
      report.results.append(result.row("schedule_rpc_tls_\(connections)x\(inFlight)"))
      for transport in transports { await transport.close() }
      await group.triggerGracefulShutdown()
      try await tasks.waitForAll()
    }
    try await store.close()
    report.print(json: json)
  }
}
