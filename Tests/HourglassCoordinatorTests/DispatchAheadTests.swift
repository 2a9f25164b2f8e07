import Foundation
import HourglassCore
import HourglassStore
import Testing

@Suite("Dispatcher: work done ahead of the due time, off the dispatch path", .timeLimit(.minutes(1)))
struct DispatchAheadTests {
  @Test("a run loaded from the store has its task read when loaded, not again when it is leased")
  func recordsReadAhead() async throws {
    try await Harness.with(observed: true) { harness in
      let observed = try #require(harness.observed)
      let alice = harness.client("alice")
      // Due in 90 s: beyond the loaded window (60 s), so it is the loader that queues it.
      let id = try await alice.schedule(once: 90)
      let taskID = try #require(TaskID(id))
      let executor = try await harness.executor("exec-1")
      executor.grant(1)
      harness.advance(seconds: 50)
      // The loader reads the window that holds the run, and the run's task with it.
      await observed.waitForRecordRead(of: taskID)
      #expect(observed.recordReads(of: taskID) == [Harness.start + 50_000_000])

      harness.advance(seconds: 40)
      let lease = try await executor.nextLease()
      #expect(lease.taskID == id)
      #expect(!lease.blob.isEmpty)
      // Leased without a second read.
      #expect(observed.recordReads(of: taskID) == [Harness.start + 50_000_000])
      #expect(try await executor.report(lease, outcome: .succeeded))
      await executor.close()
    }
  }

  @Test("a run read ahead whose task was deleted in the store meanwhile is not leased (the lease's compare-and-set refuses it)")
  func deletedAfterReadAhead() async throws {
    try await Harness.with(observed: true) { harness in
      let observed = try #require(harness.observed)
      let alice = harness.client("alice")
      let gone = try await alice.schedule(once: 90)
      let kept = try await alice.schedule(once: 91)
      let executor = try await harness.executor("exec-1")
      executor.grant(2)
      harness.advance(seconds: 50)
      await observed.waitForRecordRead(of: try #require(TaskID(gone)))
      await observed.waitForRecordRead(of: try #require(TaskID(kept)))
      // Deleted behind the dispatcher's back: its queue and the record read ahead still say
      // active; only the store knows.
      _ = try await harness.store.deleteTask(id: try #require(TaskID(gone)), owner: "alice", cancelRunning: false, now: harness.clock.nowMicros())

      harness.advance(seconds: 41)
      let lease = try await executor.nextLease()
      #expect(lease.taskID == kept)
      #expect(try await executor.report(lease, outcome: .succeeded))
      #expect(try await harness.store.dispatchRecord(taskID: try #require(TaskID(gone))) == nil)
      await executor.close()
    }
  }

  @Test("due runs go out while lease recovery waits for the store")
  func recoveryBesideDispatch() async throws {
    try await Harness.with(observed: true) { harness in
      let observed = try #require(harness.observed)
      let alice = harness.client("alice")
      let id = try await alice.schedule(once: 2)
      let executor = try await harness.executor("exec-1")
      executor.grant(1)
      observed.holdNextRecovery()
      harness.advance(seconds: 1)
      await observed.waitUntilRecoveryHeld()

      // Recovery is stuck in the store; the run due now goes out regardless.
      harness.advance(seconds: 1)
      let lease = try await executor.nextLease()
      #expect(lease.taskID == id)
      observed.releaseRecovery()
      #expect(try await executor.report(lease, outcome: .succeeded))
      await executor.close()
    }
  }
}
