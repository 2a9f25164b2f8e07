import Foundation
import HourglassCertificates
import HourglassCoordinator
import HourglassExecutor
import HourglassProto
import HourglassRPC
import HourglassStoreSQLite
import HourglassTransport
import Logging
import ServiceLifecycle
import SwiftProtobuf
import Testing

/// A real `Executor` (HourglassExecutor, the `exec` operator) connected over loopback mutual TLS
/// to a real `Coordinator` on SQLite: the whole path a production run takes, in one process.
@Suite("Coordinator with a real executor over TLS")
struct RealExecutorTests {
  @Test("a one-shot exec task runs end to end and its result is recorded", .timeLimit(.minutes(3)))
  func oneShotEndToEnd() async throws {
    let directory = NSTemporaryDirectory() + "hourglass-real-executor-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: directory) }
    var logger = Logger(label: "test.real-executor")
    logger.logLevel = .critical

    let ca = try DevelopmentCA()
    let store = try await SQLiteTaskStore(configuration: .defaults(path: directory + "/tasks.db"), logger: logger)
    let coordinator = try Coordinator(
      configuration: .defaults, store: store,
      tls: .init(
        host: "127.0.0.1", port: 0,
        credentials: try ca.credentials(name: "coordinator", role: .coordinator, dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"])), logger: logger)
    let services = ServiceGroup(services: [coordinator], gracefulShutdownSignals: [], cancellationSignals: [], logger: logger)

    try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask { try await services.run() }
      let port = try #require(try await coordinator.port())

      // The user schedules a one-shot script due now, over TLS with its certificate.
      let user = RPCClient(
        transport: try RPCTLSConnection(
          configuration: .init(host: "127.0.0.1", port: port, credentials: try ca.credentials(name: "alice", role: .user)), logger: logger))
      var request = Hourglass_V1_ScheduleRequest()
      request.userID = "alice"
      request.operator = "exec"
      request.taskBlob = Data("#!/bin/sh\necho \"hello from $HOURGLASS_RUN_ID\"\n".utf8)
      request.schedule.once.instant = Google_Protobuf_Timestamp(date: Date())
      let scheduled: Hourglass_V1_ScheduleResponse = try await user.unary(
        MethodDescriptor(service: "hourglass.v1.TaskService", method: "Schedule"), request: request)

      // A real executor connects with its own certificate and runs it.
      var configuration = ExecutorConfiguration.defaults
      configuration.executorID = "executor-1"
      configuration.slots = 2
      configuration.operators = ["exec"]
      configuration.temporaryDirectory = directory
      configuration.drainGrace = .seconds(5)
      let executor = Executor(
        configuration: configuration,
        transport: try RPCTLSConnection(
          configuration: .init(host: "127.0.0.1", port: port, credentials: try ca.credentials(name: "executor-1", role: .executor)), logger: logger),
        clock: ContinuousClock(), logger: logger)
      group.addTask { try await executor.run() }

      await coordinator.waitUntilRecorded(1)

      var get = Hourglass_V1_GetRequest()
      get.taskID = scheduled.taskID
      let info: Hourglass_V1_GetResponse = try await user.unary(MethodDescriptor(service: "hourglass.v1.TaskService", method: "Get"), request: get)
      #expect(info.task.taskStatus == .succeeded)
      var list = Hourglass_V1_ListRunsRequest()
      list.taskID = scheduled.taskID
      let runs: Hourglass_V1_ListRunsResponse = try await user.unary(
        MethodDescriptor(service: "hourglass.v1.TaskService", method: "ListRuns"), request: list)
      #expect(runs.runs.count == 1)
      let run = try #require(runs.runs.first)
      #expect(run.status == .succeeded)
      #expect(run.attempt == 1)
      #expect(String(decoding: run.outputTail, as: UTF8.self).contains("hello from \(scheduled.taskID)@"))

      executor.drain()
      await services.triggerGracefulShutdown()
      try await group.waitForAll()
    }
    try await store.close()
  }
}
