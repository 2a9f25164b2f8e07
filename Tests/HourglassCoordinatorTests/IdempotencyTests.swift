import Foundation
import HourglassCoordinator
import HourglassProto
import HourglassRPC
import HourglassStoreSQLite
import Logging
import SwiftProtobuf
import Testing

/// `ScheduleRequest.idempotency_key`: one user's retries with one key make one task, also when
/// the retry reaches a restarted coordinator.
@Suite("Schedule idempotency keys")
struct IdempotencyTests {
  static func request(key: String, name: String = "job") -> Hourglass_V1_ScheduleRequest {
    var request = Hourglass_V1_ScheduleRequest()
    request.operator = "noop"
    request.name = name
    request.idempotencyKey = key
    request.schedule.once.instant = Google_Protobuf_Timestamp(seconds: Harness.start / 1_000_000 + 3600)
    return request
  }

  static func schedule(_ rpc: RPCClient, _ request: Hourglass_V1_ScheduleRequest) async throws -> String {
    let response: Hourglass_V1_ScheduleResponse = try await rpc.unary(
      MethodDescriptor(service: "hourglass.v1.TaskService", method: "Schedule"), request: request)
    return response.taskID
  }

  @Test("same user and key: the same task; another key or another user: a new one")
  func sameKeySameTask() async throws {
    try await Harness.with { harness in
      let alice = harness.client("alice")
      let bob = harness.client("bob")
      let first = try await Self.schedule(alice.rpc, Self.request(key: "order-17"))
      #expect(try await Self.schedule(alice.rpc, Self.request(key: "order-17")) == first)
      // Concurrent retries converge on one task too.
      let concurrent = try await withThrowingTaskGroup(of: String.self) { group in
        for _ in 0..<8 { group.addTask { try await Self.schedule(alice.rpc, Self.request(key: "order-18")) } }
        return try await group.reduce(into: Set<String>()) { $0.insert($1) }
      }
      #expect(concurrent.count == 1)
      #expect(try await Self.schedule(alice.rpc, Self.request(key: "order-19")) != first)
      let bobs = try await Self.schedule(bob.rpc, Self.request(key: "order-17"))
      #expect(bobs != first)
      #expect(try await alice.list().count == 3)
      #expect(try await bob.list().count == 1)
      // No key: every request is a new task.
      #expect(try await Self.schedule(alice.rpc, Self.request(key: "")) != (try await Self.schedule(alice.rpc, Self.request(key: ""))))
    }
  }

  @Test("the key survives a coordinator restart on the same store")
  func acrossRestart() async throws {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("hourglass-idem-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    var logger = Logger(label: "test.idempotency")
    logger.logLevel = .critical
    let path = directory.appendingPathComponent("tasks.db").path
    func withCoordinator<T: Sendable>(_ body: (RPCClient) async throws -> T) async throws -> T {
      try await Harness.onFile(path, clock: ManualClock(nowMicros: Harness.start), logger: logger) { coordinator in
        try await body(RPCClient(transport: InProcessTransport(server: coordinator.server, peer: PeerIdentity(name: "alice", role: "user"))))
      }
    }
    let first = try await withCoordinator { try await Self.schedule($0, Self.request(key: "nightly-report")) }
    let again = try await withCoordinator { try await Self.schedule($0, Self.request(key: "nightly-report")) }
    #expect(again == first)
  }
}
