import Foundation
import HourglassProto
import HourglassRPC
import SwiftProtobuf
import Testing

/// The overlap policy of recurring tasks: `skip` (the default) waits for the running run; `allow`
/// dispatches the next run while the previous one is still running.
@Suite("Overlap policy")
struct OverlapTests {
  static func schedule(_ client: UserClient, overlap: Hourglass_V1_OverlapPolicy, every: Int64 = 30) async throws -> String {
    var request = Hourglass_V1_ScheduleRequest()
    request.userID = client.user
    request.operator = "noop"
    request.isRecurring = true
    request.schedule.interval.every = Google_Protobuf_Duration(seconds: every)
    request.schedule.interval.anchor = Google_Protobuf_Timestamp(seconds: Harness.start / 1_000_000)
    request.schedule.overlap = overlap
    let response: Hourglass_V1_ScheduleResponse = try await client.rpc.unary(
      MethodDescriptor(service: UserClient.service, method: "Schedule"), request: request)
    return response.taskID
  }

  @Test("allow: the next run goes out while the previous one runs; both results are recorded")
  func allow() async throws {
    try await Harness.with { harness in
      let alice = harness.client("alice")
      let id = try await Self.schedule(alice, overlap: .allow)
      let executor = try await harness.executor("exec-1", slots: 2)
      executor.grant(2)
      let first = try await executor.nextLease()
      #expect(first.runID == "\(id)@\(Harness.start)")
      // The next run is queued as soon as the first is leased, not when it ends.
      #expect(await harness.coordinator.queuedRuns() == 1)
      harness.advance(seconds: 30)
      let second = try await executor.nextLease()
      #expect(second.runID == "\(id)@\(Harness.start + 30_000_000)")
      // Results in either order: each is recorded once.
      #expect(try await executor.report(second, outcome: .succeeded))
      #expect(try await executor.report(first, outcome: .failed, exitCode: 3))
      #expect(try await executor.report(first, outcome: .succeeded) == false)
      let runs = try await alice.runs(id)
      #expect(runs.map(\.runID) == [second.runID, first.runID])
      // A detached run gets one attempt: its failure is final.
      #expect(runs.map(\.status) == [.succeeded, .dead])
      let info = try await alice.get(id)
      #expect(info.taskStatus == .scheduled)
      #expect(info.nextExecution.seconds == Harness.start / 1_000_000 + 60)
      #expect(info.lastExecuted.seconds == Harness.start / 1_000_000 + 30)
      await executor.close()
    }
  }

  @Test("allow: a run still going after the task moved on counts as in progress for Delete, and is cancelled with it", .timeLimit(.minutes(3)))
  func deleteWithDetachedRun() async throws {
    try await Harness.with { harness in
      let alice = harness.client("alice")
      let id = try await Self.schedule(alice, overlap: .allow, every: 3600)
      let executor = try await harness.executor("exec-1", slots: 2)
      executor.grant(2)
      let first = try await executor.nextLease()
      // The task has moved on to its next run (an hour away); the first one is still leased.
      #expect(try await alice.get(id).taskStatus == .scheduled)
      await #expect {
        _ = try await alice.delete(id)
      } throws: { ($0 as? RPCError)?.code == .failedPrecondition }
      #expect(try await alice.delete(id, cancelRunning: true).cancelledRun)
      let message = try await executor.next()
      guard case .cancel(let cancel)? = message.kind else {
        Issue.record("expected a CancelRun, got \(message)")
        return
      }
      #expect(cancel.runID == first.runID)
      #expect(try await executor.report(first, outcome: .succeeded) == false)
      await executor.close()
    }
  }

  @Test("skip: no next run is queued while one is running")
  func skip() async throws {
    // The lease outlasts the 90 s the test jumps ahead, so that the first run's result is not
    // raced by lease recovery (with 30 s leases it would legitimately be refused if recovery
    // ran first).
    try await Harness.with(configure: { $0.leaseDurationMicros = 300_000_000 }) { harness in
      let alice = harness.client("alice")
      let id = try await Self.schedule(alice, overlap: .skip, every: 60)
      let executor = try await harness.executor("exec-1", slots: 2)
      executor.grant(2)
      let first = try await executor.nextLease()
      #expect(first.runID == "\(id)@\(Harness.start)")
      #expect(await harness.coordinator.queuedRuns() == 0)
      harness.advance(seconds: 90)
      #expect(try await executor.report(first, outcome: .succeeded))
      // The run due at +60 s was missed while the first ran; the misfire policy (run once now)
      // sends it when the first ends.
      let second = try await executor.nextLease()
      #expect(second.runID == "\(id)@\(Harness.start + 60_000_000)")
      await executor.close()
    }
  }
}
