import CoreMetrics
import Foundation
import HourglassCoordinator
import HourglassCore
import HourglassProto
import HourglassRPC
import HourglassStore
import HourglassStoreSQLite
import Logging
import SwiftProtobuf
import Synchronization

/// A coordinator on a real SQLite file in a temporary folder, driven by a manual clock, reached
/// through the in-process transport (the TLS path has its own tests).
struct Harness {
  static let start: Int64 = 1_795_996_800_000_000  // 2026-12-01T00:00:00Z

  let coordinator: Coordinator
  let store: SQLiteTaskStore
  let clock: ManualClock
  let directory: URL
  /// The store the coordinator was given, when the test asked to watch it (`observed: true`).
  let observed: ObservedStore?
  /// The coordinator's `run()`.
  let running: Task<Void, any Error>

  static func with<T: Sendable>(
    configure: (inout CoordinatorConfiguration) -> Void = { _ in }, metricsFactory: any MetricsFactory = NOOPMetricsHandler.instance,
    logger customLogger: Logger? = nil, observed: Bool = false, _ body: (Harness) async throws -> T
  ) async throws -> T {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("hourglass-coord-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    var logger = Logger(label: "test.coordinator")
    logger.logLevel = .warning
    if let customLogger { logger = customLogger }
    var storeConfiguration = SQLiteTaskStore.Configuration.defaults(path: directory.appendingPathComponent("tasks.db").path)
    storeConfiguration.partitionCount = 4
    let store = try await SQLiteTaskStore(configuration: storeConfiguration, logger: logger)
    let clock = ManualClock(nowMicros: start)
    var configuration = CoordinatorConfiguration.defaults
    configure(&configuration)
    let watched = observed ? ObservedStore(store, clock: clock) : nil
    let coordinator = try Coordinator(
      configuration: configuration, store: watched ?? store, tls: nil, clock: clock, logger: logger, metricsFactory: metricsFactory)
    return try await run(coordinator, store: store) { running in
      try await body(Harness(coordinator: coordinator, store: store, clock: clock, directory: directory, observed: watched, running: running))
    }
  }

  /// Runs `coordinator` for `body` (given the running task); then stops it and closes `store`,
  /// whether `body` returned or threw.
  private static func run<T: Sendable>(
    _ coordinator: Coordinator, store: SQLiteTaskStore, _ body: (Task<Void, any Error>) async throws -> T
  ) async throws -> T {
    let running = Task { try await coordinator.run() }
    do {
      let result = try await body(running)
      running.cancel()
      _ = await running.result
      try await store.close()
      return result
    } catch {
      running.cancel()
      _ = await running.result
      try? await store.close()
      throw error
    }
  }

  /// A coordinator with the default configuration on the SQLite file at `path` (which outlives
  /// it: call again for a restart), on `clock`, for `body`; then it stops and its store closes.
  static func onFile<T: Sendable>(
    _ path: String, clock: ManualClock, logger: Logger, _ body: (Coordinator) async throws -> T
  ) async throws -> T {
    let store = try await SQLiteTaskStore(configuration: .defaults(path: path), logger: logger)
    let coordinator = try Coordinator(configuration: .defaults, store: store, tls: nil, clock: clock, logger: logger)
    return try await run(coordinator, store: store) { _ in try await body(coordinator) }
  }

  func client(_ user: String) -> UserClient {
    UserClient(rpc: RPCClient(transport: InProcessTransport(server: coordinator.server, peer: PeerIdentity(name: user, role: "user"))), user: user)
  }

  /// An executor connected to the coordinator; its first heartbeat (unless `heartbeat` is
  /// false) says its clock is the coordinator's.
  func executor(
    _ name: String, operators: [String] = ["exec", "noop"], slots: UInt32 = 4, batches: Bool = false, heartbeat: Bool = true
  ) async throws -> FakeExecutor {
    let clock = self.clock
    var stamp: (@Sendable () -> Int64)?
    if heartbeat { stamp = { clock.nowMicros() } }
    return try await FakeExecutor.connect(
      RPCClient(transport: InProcessTransport(server: coordinator.server, peer: PeerIdentity(name: name, role: "executor"))),
      name: name, operators: operators, slots: slots, batches: batches, clock: stamp)
  }

  func advance(seconds: Double) {
    clock.advance(byMicros: Int64(seconds * 1_000_000))
  }

  /// Alice's one-shot task due in 1 s, leased to a new executor `exec-1` (one credit) once the
  /// clock has reached it: the start of every test about one leased run.
  func leasedOneShot() async throws -> (alice: UserClient, taskID: String, executor: FakeExecutor, lease: Hourglass_V1_LeaseGrant) {
    let alice = client("alice")
    let id = try await alice.schedule(once: 1)
    let executor = try await executor("exec-1")
    executor.grant(1)
    advance(seconds: 1)
    return (alice, id, executor, try await executor.nextLease())
  }
}

/// The task service, as one user.
struct UserClient: Sendable {
  let rpc: RPCClient
  let user: String

  static let service = "hourglass.v1.TaskService"

  func schedule(
    once offsetSeconds: Int64? = nil, every: Int64? = nil, recurring: Bool = false, retry: Hourglass_V1_RetryPolicy? = nil,
    blob: [UInt8] = Array("#!/bin/sh\necho hi\n".utf8), priority: Int32 = 0
  ) async throws -> String {
    var request = Hourglass_V1_ScheduleRequest()
    request.userID = user
    request.taskBlob = Data(blob)
    var spec = Hourglass_V1_ScheduleSpec()
    if let offsetSeconds {
      var once = Hourglass_V1_OnceSchedule()
      once.instant = Google_Protobuf_Timestamp(seconds: (Harness.start / 1_000_000) + offsetSeconds)
      spec.once = once
    }
    if let every {
      var interval = Hourglass_V1_IntervalSchedule()
      interval.every = Google_Protobuf_Duration(seconds: every)
      interval.anchor = Google_Protobuf_Timestamp(seconds: Harness.start / 1_000_000)
      spec.interval = interval
    }
    request.schedule = spec
    request.isRecurring = recurring
    request.priority = priority
    if let retry { request.retry = retry }
    let response: Hourglass_V1_ScheduleResponse = try await rpc.unary(
      MethodDescriptor(service: Self.service, method: "Schedule"), request: request)
    return response.taskID
  }

  func get(_ id: String) async throws -> Hourglass_V1_TaskInfo {
    var request = Hourglass_V1_GetRequest()
    request.userID = user
    request.taskID = id
    let response: Hourglass_V1_GetResponse = try await rpc.unary(MethodDescriptor(service: Self.service, method: "Get"), request: request)
    return response.task
  }

  func list() async throws -> [Hourglass_V1_TaskInfo] {
    var request = Hourglass_V1_ListRequest()
    request.userID = user
    let response: Hourglass_V1_ListResponse = try await rpc.unary(MethodDescriptor(service: Self.service, method: "List"), request: request)
    return response.tasks
  }

  func delete(_ id: String, cancelRunning: Bool = false) async throws -> Hourglass_V1_DeleteResponse {
    var request = Hourglass_V1_DeleteRequest()
    request.userID = user
    request.taskID = id
    request.cancelRunning = cancelRunning
    return try await rpc.unary(MethodDescriptor(service: Self.service, method: "Delete"), request: request)
  }

  func runs(_ id: String) async throws -> [Hourglass_V1_RunInfo] {
    var request = Hourglass_V1_ListRunsRequest()
    request.userID = user
    request.taskID = id
    let response: Hourglass_V1_ListRunsResponse = try await rpc.unary(MethodDescriptor(service: Self.service, method: "ListRuns"), request: request)
    return response.runs
  }
}

/// A scripted executor: the test sends and receives the stream's messages itself.
final class FakeExecutor: Sendable {
  private let outbound: AsyncStream<Hourglass_V1_ExecutorMessage>.Continuation
  // One consumer at a time (the test), so a fresh iterator per read is fine.
  private let inbound: AsyncThrowingStream<Hourglass_V1_CoordinatorMessage, any Error>
  private let call: Task<Void, any Error>

  private init(
    outbound: AsyncStream<Hourglass_V1_ExecutorMessage>.Continuation, inbound: AsyncThrowingStream<Hourglass_V1_CoordinatorMessage, any Error>,
    call: Task<Void, any Error>
  ) {
    self.outbound = outbound
    self.inbound = inbound
    self.call = call
  }

  /// Registers as `name` and, as a real executor does at once, sends a first heartbeat stamped
  /// by `clock` (the coordinator's clock, for an executor whose clock is right) when it sends
  /// it: the coordinator sends no lease to an executor whose clock it has not measured. Returns
  /// once that heartbeat is acknowledged. With `clock` nil no heartbeat is sent.
  static func connect(
    _ rpc: RPCClient, name: String, operators: [String], slots: UInt32, batches: Bool = false, clock: (@Sendable () -> Int64)?
  ) async throws -> FakeExecutor {
    let (requests, requestContinuation) = AsyncStream<Hourglass_V1_ExecutorMessage>.makeStream()
    let (responses, responseContinuation) = AsyncThrowingStream<Hourglass_V1_CoordinatorMessage, any Error>.makeStream()
    let call = Task {
      do {
        try await rpc.bidirectional(
          MethodDescriptor(service: "hourglass.v1.ExecutorService", method: "Connect"),
          requestType: Hourglass_V1_ExecutorMessage.self,
          responseType: Hourglass_V1_CoordinatorMessage.self,
          requests: { writer in
            for await message in requests { try await writer.write(message) }
          },
          responses: { messages in
            for try await message in messages { responseContinuation.yield(message) }
          }
        )
        responseContinuation.finish()
      } catch {
        responseContinuation.finish(throwing: error)
        throw error
      }
    }
    let executor = FakeExecutor(outbound: requestContinuation, inbound: responses, call: call)
    var register = Hourglass_V1_Register()
    register.executorID = name
    register.operators = operators
    register.slots = slots
    register.batches = batches
    executor.send { $0.register = register }
    let hello = try await executor.next()
    guard case .registered(let registered)? = hello.kind else { throw RPCError(code: .internal, message: "expected Registered, got \(hello)") }
    guard registered.batches else { throw RPCError(code: .internal, message: "the coordinator does not take result batches") }
    guard registered.withdrawals else { throw RPCError(code: .internal, message: "the coordinator does not answer credit withdrawals") }
    guard let clock else { return executor }
    // A heartbeat stamped with the right time is still measured outside the bound when it took
    // longer than the bound to arrive (a loaded machine, another process): stamped afresh, it
    // is sent again, as a real executor does.
    var ack = Hourglass_V1_HeartbeatAck()
    for sequence in 0..<UInt64(20) where !ack.eligible {
      ack = try await executor.heartbeat(executorTimeMicros: clock(), sequence: sequence)
    }
    guard ack.eligible else { throw RPCError(code: .internal, message: "the coordinator finds this executor's clock outside the bound: \(ack)") }
    return executor
  }

  func send(_ build: (inout Hourglass_V1_ExecutorMessage) -> Void) {
    var message = Hourglass_V1_ExecutorMessage()
    build(&message)
    outbound.yield(message)
  }

  func grant(_ credits: UInt32) {
    send { $0.credit = .with { $0.credits = credits } }
  }

  /// The next message from the coordinator, skipping heartbeat acks unless `heartbeatAcks`.
  func next(heartbeatAcks: Bool = false) async throws -> Hourglass_V1_CoordinatorMessage {
    var iterator = inbound.makeAsyncIterator()
    while let message = try await iterator.next() {
      if !heartbeatAcks, case .heartbeatAck? = message.kind { continue }
      return message
    }
    throw RPCError(code: .unavailable, message: "the stream ended")
  }

  func nextLease() async throws -> Hourglass_V1_LeaseGrant {
    let message = try await next()
    guard case .lease(let lease)? = message.kind else { throw RPCError(code: .internal, message: "expected a lease, got \(message)") }
    return lease
  }

  /// Reports `lease`'s result (with `fence`, its own by default; `started` and `finished` by
  /// this executor's clock, absent by default) and returns whether it was recorded.
  func report(
    _ lease: Hourglass_V1_LeaseGrant, outcome: Hourglass_V1_RunOutcome, exitCode: Int32 = 0, fence: UInt64? = nil, started: Int64? = nil,
    finished: Int64? = nil
  ) async throws -> Bool {
    send {
      $0.result = .with {
        $0.runID = lease.runID
        $0.fence = fence ?? lease.fence
        $0.outcome = outcome
        $0.exitCode = exitCode
        if let started { $0.started = ProtoTime.timestamp(started) }
        if let finished { $0.finished = ProtoTime.timestamp(finished) }
      }
    }
    let message = try await next()
    guard case .resultAck(let ack)? = message.kind else { throw RPCError(code: .internal, message: "expected a result ack, got \(message)") }
    return ack.recorded
  }

  /// Renews `lease` (with `fence`, its own by default) and returns the coordinator's answer.
  func renew(_ lease: Hourglass_V1_LeaseGrant, fence: UInt64? = nil) async throws -> Hourglass_V1_RenewalAck {
    send {
      $0.renewal = .with {
        $0.runID = lease.runID
        $0.fence = fence ?? lease.fence
      }
    }
    let message = try await next()
    guard case .renewalAck(let ack)? = message.kind else { throw RPCError(code: .internal, message: "expected a renewal ack, got \(message)") }
    return ack
  }

  /// Sends a heartbeat stamped `executorTimeMicros` (with a round trip of `roundTripMicros`,
  /// zero by default) and returns the coordinator's acknowledgement, skipping other messages.
  func heartbeat(executorTimeMicros: Int64, sequence: UInt64 = 1, roundTripMicros: UInt64 = 0) async throws -> Hourglass_V1_HeartbeatAck {
    send {
      $0.heartbeat = .with {
        $0.sequence = sequence
        $0.executorTime = Google_Protobuf_Timestamp(seconds: executorTimeMicros / 1_000_000, nanos: Int32(executorTimeMicros % 1_000_000) * 1000)
        $0.lastRoundTripMicros = roundTripMicros
      }
    }
    var iterator = inbound.makeAsyncIterator()
    while let message = try await iterator.next() {
      if case .heartbeatAck(let ack)? = message.kind { return ack }
    }
    throw RPCError(code: .unavailable, message: "the stream ended")
  }

  /// Ends the stream as a crashed executor would.
  func kill() async {
    call.cancel()
    _ = await call.result
  }

  func close() async {
    outbound.finish()
    _ = await call.result
  }
}
