import Foundation
import HourglassCertificates
import HourglassCore
import HourglassProto
import HourglassRPC
import HourglassTestSupport
import HourglassTransport
import Logging
import SwiftProtobuf
import Synchronization
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// The real `hourglass coordinator` process, killed with SIGKILL and started again on the same
/// SQLite file.
@Suite("Coordinator process: SIGKILL and restart", .timeLimit(.minutes(3)))
struct CoordinatorRestartTests {
  @Test("a child coordinator exits when the parent's end of its lifeline closes")
  func lifeline() async throws {
    let setup = try ProcessSetup()
    defer { setup.remove() }
    let coordinator = try await setup.startCoordinator()
    defer { coordinator.kill() }
    // What the kernel does when this test process dies.
    coordinator.child.closeInput()
    #expect(await coordinator.child.exit() == .exited(70))
  }

  @Test("no acknowledged task is lost, and a run's result is recorded once")
  func killAndRestart() async throws {
    let setup = try ProcessSetup()
    defer { setup.remove() }
    var coordinator = try await setup.startCoordinator()
    var acknowledged: [String] = []
    var lease: Hourglass_V1_LeaseGrant?
    do {
      let alice = setup.client(user: "alice", port: coordinator.port)
      // One task due now, for the executor to lease before the crash.
      let due = try await alice.schedule(once: nil, every: nil, recurring: false, atNow: true)
      acknowledged.append(due)
      let executor = try await FakeExecutor.connect(
        setup.rpc(credentials: setup.executorCredentials, port: coordinator.port), name: "executor-1", operators: ["exec"], slots: 1,
        clock: { WallClock.nowMicros() })
      executor.grant(1)
      lease = try await executor.nextLease()
      // Many schedules in flight when the process dies: every one that was answered must survive.
      try await withThrowingTaskGroup(of: String?.self) { group in
        for i in 0..<200 {
          group.addTask {
            try? await alice.schedule(once: 3600 + Int64(i), atNow: false)
          }
        }
        var answered = 0
        for try await id in group {
          if let id {
            acknowledged.append(id)
            answered += 1
            if answered == 100 { coordinator.kill() }
          }
        }
      }
      await executor.kill()
    }
    // Dead before another starts on its file.
    await coordinator.killAndWait()
    #expect(acknowledged.count >= 101)

    coordinator = try await setup.startCoordinator()
    defer { coordinator.kill() }
    let alice = setup.client(user: "alice", port: coordinator.port)
    for id in acknowledged {
      let info = try await alice.get(id)
      #expect(info.taskID == id)
    }
    // The executor reconnects with the lease it held: its result is recorded exactly once.
    let lease1 = try #require(lease)
    let executor = try await FakeExecutor.connect(
      setup.rpc(credentials: setup.executorCredentials, port: coordinator.port), name: "executor-1", operators: ["exec"], slots: 1,
      clock: { WallClock.nowMicros() })
    #expect(try await executor.report(lease1, outcome: .succeeded))
    #expect(try await executor.report(lease1, outcome: .succeeded) == false)
    let runs = try await alice.runs(lease1.taskID)
    #expect(runs.count == 1)
    #expect(runs.first?.status == .succeeded)
    await executor.close()
  }
}

/// Certificates in a temporary folder and a way to start `hourglass coordinator` on them.
struct ProcessSetup {
  let directory: String
  let ca: DevelopmentCA
  let userCredentials: [String: TLSCredentials]
  let executorCredentials: TLSCredentials

  init() throws {
    directory = NSTemporaryDirectory() + "hourglass-restart-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    ca = try DevelopmentCA()
    let server = try ca.issue(name: "coordinator", role: .coordinator, dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"])
    try ca.authority.certificatePEM.write(toFile: directory + "/ca.pem", atomically: true, encoding: .utf8)
    try server.certificatePEM.write(toFile: directory + "/server.pem", atomically: true, encoding: .utf8)
    try server.privateKeyPEM.write(toFile: directory + "/server-key.pem", atomically: true, encoding: .utf8)
    let alice = try ca.issue(name: "alice", role: .user)
    userCredentials = [
      "alice": TLSCredentials(trustedCAPEM: ca.authority.certificatePEM, certificatePEM: alice.certificatePEM, privateKeyPEM: alice.privateKeyPEM)
    ]
    let executor = try ca.issue(name: "executor-1", role: .executor)
    executorCredentials = TLSCredentials(
      trustedCAPEM: ca.authority.certificatePEM, certificatePEM: executor.certificatePEM, privateKeyPEM: executor.privateKeyPEM)
  }

  func remove() { try? FileManager.default.removeItem(atPath: directory) }

  /// The `hourglass` executable built beside the test bundle.
  static var executable: String {
    let bundle = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    return bundle.appendingPathComponent("hourglass").path
  }

  func startCoordinator() async throws -> CoordinatorProcess {
    try await CoordinatorProcess.start(arguments: [
      "coordinator", "--store", "sqlite:\(directory)/tasks.db", "--listen", "127.0.0.1:0",
      "--ca", directory + "/ca.pem", "--cert", directory + "/server.pem", "--key", directory + "/server-key.pem",
      "--sqlite-writer-cache-mib", "64",
      // No test here waits for a lease to run out, and the restart test reports its lease after
      // a crash and a restart, which on a loaded machine took longer than the default 30 s.
      "--lease-seconds", "600",
    ])
  }

  func rpc(credentials: TLSCredentials, port: Int) throws -> RPCClient {
    var logger = Logger(label: "test.restart")
    logger.logLevel = .critical
    return RPCClient(transport: try RPCTLSConnection(configuration: .init(host: "127.0.0.1", port: port, credentials: credentials), logger: logger))
  }

  func client(user: String, port: Int) -> RestartClient {
    RestartClient(rpc: try! rpc(credentials: userCredentials[user]!, port: port), user: user)
  }
}

/// The task service over TLS, for the restart test.
struct RestartClient: Sendable {
  let rpc: RPCClient
  let user: String

  func schedule(
    once offset: Int64?, every: Int64? = nil, recurring: Bool = false, atNow: Bool, blob: String = "#!/bin/sh\ntrue\n"
  ) async throws
    -> String
  {
    var request = Hourglass_V1_ScheduleRequest()
    request.userID = user
    request.taskBlob = Data(blob.utf8)
    var once = Hourglass_V1_OnceSchedule()
    let now = Int64(Date().timeIntervalSince1970)
    once.instant = Google_Protobuf_Timestamp(seconds: atNow ? now : now + (offset ?? 0))
    request.schedule.once = once
    let response: Hourglass_V1_ScheduleResponse = try await rpc.unary(
      MethodDescriptor(service: "hourglass.v1.TaskService", method: "Schedule"), request: request)
    return response.taskID
  }

  func get(_ id: String) async throws -> Hourglass_V1_TaskInfo {
    var request = Hourglass_V1_GetRequest()
    request.taskID = id
    let response: Hourglass_V1_GetResponse = try await rpc.unary(MethodDescriptor(service: "hourglass.v1.TaskService", method: "Get"), request: request)
    return response.task
  }

  func runs(_ id: String) async throws -> [Hourglass_V1_RunInfo] {
    var request = Hourglass_V1_ListRunsRequest()
    request.taskID = id
    let response: Hourglass_V1_ListRunsResponse = try await rpc.unary(
      MethodDescriptor(service: "hourglass.v1.TaskService", method: "ListRuns"), request: request)
    return response.runs
  }
}

/// A running `hourglass coordinator` child process; its port is read from its "listening" log line.
struct CoordinatorProcess {
  let child: TestProcess
  let port: Int

  static func start(arguments: [String]) async throws -> CoordinatorProcess {
    let child = try TestProcess.hourglass(arguments)
    guard await child.waitForOutput(containing: "listening"), let port = child.listeningPort else {
      throw RPCError(code: .unavailable, message: "the coordinator exited: \(child.output)")
    }
    return CoordinatorProcess(child: child, port: port)
  }

  /// SIGKILL: no drain, no flush, nothing. Returns at once.
  func kill() { child.kill() }

  /// SIGKILL, then waits until the process is gone.
  func killAndWait() async {
    child.kill()
    _ = await child.exit()
  }
}
