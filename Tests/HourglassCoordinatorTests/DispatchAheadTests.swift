import Foundation
import HourglassCore
import HourglassProto
import HourglassStore
import Testing

@Suite("Dispatcher: work done ahead of the due time, off the dispatch path", .timeLimit(.minutes(3)))
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

  @Test("the runs of an executor that died are recovered with one read of their tasks, and leased without another")
  func recoveryReadsOnce() async throws {
    try await Harness.with(observed: true) { harness in
      let observed = try #require(harness.observed)
      let alice = harness.client("alice")
      var ids: [TaskID] = []
      for _ in 0..<5 { ids.append(try #require(TaskID(try await alice.schedule(once: 1)))) }
      let first = try await harness.executor("exec-1", slots: 5)
      first.grant(5)
      harness.advance(seconds: 1)
      var lost: [String: UInt64] = [:]
      for _ in 0..<5 {
        let lease = try await first.nextLease()
        lost[lease.runID] = lease.fence
      }
      await first.kill()
      let readsBefore = ids.map { observed.recordReads(of: $0).count }

      let second = try await harness.executor("exec-2", slots: 5)
      second.grant(5)
      // After the lease (30 s) and the skew bound (0.5 s): every run goes out again.
      harness.advance(seconds: 31)
      var leases: [Hourglass_V1_LeaseGrant] = []
      for _ in 0..<5 { leases.append(try await second.nextLease()) }
      for again in leases {
        #expect(again.fence > (lost[again.runID] ?? .max))
        #expect(again.attempt == 2)
        #expect(try await second.report(again, outcome: .succeeded))
      }
      // One read for the five, shared, and nothing more when they were leased.
      let readsAfter = ids.map { observed.recordReads(of: $0).count }
      #expect(zip(readsAfter, readsBefore).allSatisfy { $0 - $1 == 1 }, "\(readsBefore) -> \(readsAfter)")
      let recoveryReads = Set(ids.flatMap { observed.recordReads(of: $0) }.filter { $0 >= Harness.start + 31_000_000 })
      #expect(recoveryReads.count == 1)
      await second.close()
    }
  }

  @Test("the loader tops the window up in sixteenths, so a run just past the window is read within a sixteenth of it")
  func loaderPassesAreSmall() async throws {
    try await Harness.with(observed: true) { harness in
      let observed = try #require(harness.observed)
      let alice = harness.client("alice")
      // The window is 60 s: loaded up to start + 60 s at start. Due at 65 s, this run is read
      // by the pass that fills to 67.5 s (at 7.5 s); passes of a quarter would wait until 15 s.
      let taskID = try #require(TaskID(try await alice.schedule(once: 65)))
      for _ in 0..<8 { harness.advance(seconds: 1) }
      await observed.waitForRecordRead(of: taskID)
      let reads = observed.recordReads(of: taskID)
      #expect(reads.count == 1)
      #expect(reads.allSatisfy { $0 <= Harness.start + 8_000_000 }, "\(reads)")
    }
  }
}
