import Foundation
import HourglassCoordinator
import HourglassCore
import HourglassProto
import HourglassRPC
import HourglassStoreSQLite
import Logging
import SwiftProtobuf
import Testing

/// Runs found long past due when they can go out (the coordinator was down, no executor could
/// take them) follow each task's misfire policy; `maxRuns` ends a recurring task.
@Suite("Coordinator: misfires and max runs", .timeLimit(.minutes(3)))
struct MisfireTests {
  static let hour: Int64 = 3600

  /// An hourly recurring task anchored at the harness's start, with `configure` applied.
  static func hourly(_ configure: (inout Hourglass_V1_ScheduleRequest) -> Void = { _ in }) -> Hourglass_V1_ScheduleRequest {
    var request = Hourglass_V1_ScheduleRequest()
    request.taskBlob = Data("#!/bin/sh\necho hi\n".utf8)
    request.isRecurring = true
    request.schedule.interval = .with {
      $0.every = Google_Protobuf_Duration(seconds: hour)
      $0.anchor = Google_Protobuf_Timestamp(seconds: Harness.start / 1_000_000)
    }
    configure(&request)
    return request
  }

  static func schedule(_ client: UserClient, _ request: Hourglass_V1_ScheduleRequest) async throws -> String {
    var request = request
    request.userID = client.user
    let response: Hourglass_V1_ScheduleResponse = try await client.rpc.unary(
      MethodDescriptor(service: UserClient.service, method: "Schedule"), request: request)
    return response.taskID
  }

  static func runID(_ id: String, hours: Int64) -> String { "\(id)@\(Harness.start + hours * hour * 1_000_000)" }

  @Test("run-once (the default): of the runs missed while no executor could take them, only the latest starts")
  func runOnceStartsTheLatest() async throws {
    try await Harness.with { harness in
      let alice = harness.client("alice")
      let id = try await Self.schedule(alice, Self.hourly())
      // Due at 0, 1, 2 and 3 h; 30 s after the last, within the one-minute grace.
      harness.advance(seconds: Double(3 * Self.hour + 30))
      let executor = try await harness.executor("exec-1")
      executor.grant(1)
      let lease = try await executor.nextLease()
      #expect(lease.runID == Self.runID(id, hours: 3))
      #expect(lease.attempt == 1)
      #expect(try await executor.report(lease, outcome: .succeeded))
      let info = try await alice.get(id)
      #expect(info.nextExecution.seconds == Harness.start / 1_000_000 + 4 * Self.hour)
      #expect(try await alice.runs(id).map(\.runID) == [Self.runID(id, hours: 3)])
      await executor.close()
    }
  }

  @Test("skip: a run missed beyond the grace never starts; the task waits for its next fire time")
  func skipWaitsForTheNext() async throws {
    try await Harness.with { harness in
      let alice = harness.client("alice")
      let id = try await Self.schedule(alice, Self.hourly { $0.schedule.misfire = .skip })
      // The latest due run (3 h) is 5 min old: outside the grace.
      harness.advance(seconds: Double(3 * Self.hour + 300))
      let executor = try await harness.executor("exec-1")
      executor.grant(1)
      harness.advance(seconds: Double(Self.hour - 300))
      // The first lease this executor gets is the 4 h run: none of the missed ones went out.
      let lease = try await executor.nextLease()
      #expect(lease.runID == Self.runID(id, hours: 4))
      await executor.close()
    }
  }

  @Test("a misfire decided on a record read ahead that changed since is decided again on a fresh read, not dropped")
  func misfireWithAStaleRecord() async throws {
    try await Harness.with(observed: true) { harness in
      let observed = try #require(harness.observed)
      let alice = harness.client("alice")
      // Hourly, from 2 h on: the first run is beyond the loaded window.
      let id = try await Self.schedule(
        alice, Self.hourly { $0.schedule.notBefore = Google_Protobuf_Timestamp(seconds: Harness.start / 1_000_000 + 2 * Self.hour) })
      let taskID = try #require(TaskID(id))
      harness.advance(seconds: Double(2 * Self.hour - 30))
      // Loaded, and its record read ahead.
      await observed.waitForRecordRead(of: taskID)
      // Its version changes, its next run does not (as a detached run's result does).
      let record = try #require(try await harness.store.task(id: taskID, owner: "alice"))
      #expect(try await harness.store.advance(taskID: taskID, expectedVersion: record.version, nextRunMicros: record.nextRunMicros, state: .active) != nil)
      // At 3 h 30 s the 2 h run is past its grace and the 3 h one is due: run-once starts that.
      harness.advance(seconds: Double(Self.hour + 60))
      let executor = try await harness.executor("exec-1")
      executor.grant(1)
      #expect(try await executor.nextLease().runID == Self.runID(id, hours: 3))
      await executor.close()
    }
  }

  @Test("maxRuns ends a recurring task after that many runs")
  func maxRunsEndsTheTask() async throws {
    try await Harness.with { harness in
      let alice = harness.client("alice")
      let id = try await Self.schedule(alice, Self.hourly { $0.schedule.maxRuns = 2 })
      let executor = try await harness.executor("exec-1")
      executor.grant(1)
      var leased: [String] = []
      for round in 0..<2 {
        if round > 0 { harness.advance(seconds: Double(Self.hour)) }
        let lease = try await executor.nextLease()
        leased.append(lease.runID)
        #expect(try await executor.report(lease, outcome: .succeeded))
        executor.grant(1)
      }
      #expect(leased == [Self.runID(id, hours: 0), Self.runID(id, hours: 1)])
      let info = try await alice.get(id)
      #expect(info.taskStatus == .succeeded)
      #expect(!info.hasNextExecution)
      await executor.close()
    }
  }

  @Test("after a downtime of two days, overdue runs are found: a one-shot runs late, a recurring task once")
  func longDowntime() async throws {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("hourglass-misfire-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    var logger = Logger(label: "test.misfire")
    logger.logLevel = .critical
    let path = directory.appendingPathComponent("tasks.db").path
    func alice(_ coordinator: Coordinator) -> UserClient {
      UserClient(rpc: RPCClient(transport: InProcessTransport(server: coordinator.server, peer: PeerIdentity(name: "alice", role: "user"))), user: "alice")
    }
    let (oneShot, hourly) = try await Harness.onFile(path, clock: ManualClock(nowMicros: Harness.start), logger: logger) { coordinator in
      (try await alice(coordinator).schedule(once: 10), try await Self.schedule(alice(coordinator), Self.hourly()))
    }
    // Back 48 h and 30 s later: the one-shot is 48 h overdue, the hourly task missed 48 runs.
    let later = ManualClock(nowMicros: Harness.start + (48 * Self.hour + 30) * 1_000_000)
    try await Harness.onFile(path, clock: later, logger: logger) { coordinator in
      let executor = try await FakeExecutor.connect(
        RPCClient(transport: InProcessTransport(server: coordinator.server, peer: PeerIdentity(name: "exec-1", role: "executor"))),
        name: "exec-1", operators: ["exec"], slots: 2, clock: { later.nowMicros() })
      executor.grant(2)
      var leased: Set<String> = []
      for _ in 0..<2 { leased.insert(try await executor.nextLease().runID) }
      #expect(leased == ["\(oneShot)@\(Harness.start + 10_000_000)", Self.runID(hourly, hours: 48)])
      await executor.close()
    }
  }
}
