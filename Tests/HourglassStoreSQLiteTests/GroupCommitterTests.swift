import HourglassStore
import Synchronization
import Testing

/// Holds the first commit until the test opens it, so the next requests queue up behind it.
final class Gate: Sendable {
  private let state = Mutex<(open: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

  func wait() async {
    await withCheckedContinuation { continuation in
      let open = state.withLock { state -> Bool in
        if !state.open { state.waiters.append(continuation) }
        return state.open
      }
      if open { continuation.resume() }
    }
  }

  func open() {
    let waiters = state.withLock { state in
      state.open = true
      defer { state.waiters = [] }
      return state.waiters
    }
    for waiter in waiters { waiter.resume() }
  }
}

final class BatchLog: Sendable {
  let batches = Mutex<[[Int]]>([])
  func append(_ batch: [Int]) { batches.withLock { $0.append(batch) } }
  var all: [[Int]] { batches.withLock { $0 } }
}

struct CommitFailed: Error {}

@Suite("Group commit")
struct GroupCommitterTests {
  @Test func requestsQueuedDuringACommitShareTheNextTransaction() async throws {
    let gate = Gate()
    let log = BatchLog()
    let committer = GroupCommitter<Int>(maxBatchItems: 100, closedError: CommitFailed()) { items in
      log.append(items)
      if items == [0] { await gate.wait() }
    }
    try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask { try await committer.submit([0]) }
      // Wait until the first batch is being committed, then queue ten more requests.
      while log.all.isEmpty { await Task.yield() }
      for i in 1...10 { group.addTask { try await committer.submit([i, i + 100]) } }
      while committer.queuedRequests < 10 { await Task.yield() }
      gate.open()
      try await group.waitForAll()
    }
    let batches = log.all
    #expect(batches.count == 2)
    #expect(batches[1].count == 20, "all ten requests in one transaction: \(batches)")
    #expect(committer.statistics.requests == 11)
    #expect(committer.statistics.largestBatch == 20)
  }

  @Test func aFailedCommitFailsEveryCallerOfItsBatchAndOnlyThose() async throws {
    let gate = Gate()
    let log = BatchLog()
    let committer = Self.heldAndFailing(gate, log)
    let results = try await withThrowingTaskGroup(of: (Int, Bool).self) { group in
      group.addTask { (0, (try? await committer.submit([0])) != nil) }
      while log.all.isEmpty { await Task.yield() }
      group.addTask { (1, (try? await committer.submit([1])) != nil) }
      group.addTask { (2, (try? await committer.submit([-1])) != nil) }
      while committer.queuedRequests < 2 { await Task.yield() }
      gate.open()
      var results: [Int: Bool] = [:]
      for try await (request, ok) in group { results[request] = ok }
      return results
    }
    #expect(results == [0: true, 1: false, 2: false], "request 1 shared the failing transaction")
    #expect(committer.statistics.failedBatches == 1)
    // The committer keeps working after a failure.
    try await committer.submit([5])
  }

  @Test func aRequestIsNeverSplitAndClosingRefusesNewWork() async throws {
    let log = BatchLog()
    let committer = GroupCommitter<Int>(maxBatchItems: 2, closedError: CommitFailed()) { items in
      log.append(items)
    }
    try await committer.submit([1, 2, 3, 4, 5])
    #expect(log.all == [[1, 2, 3, 4, 5]])
    await committer.close()
    await #expect(throws: CommitFailed.self) { try await committer.submit([6]) }
  }

  @Test func aPauseBetweenBatchesGathersWhatArrivesMeanwhile() async throws {
    let pauseBegan = Gate()
    let pauseEnds = Gate()
    let log = BatchLog()
    let committer = GroupCommitter<Int>(
      maxBatchItems: 100, closedError: CommitFailed(),
      betweenBatches: {
        pauseBegan.open()
        await pauseEnds.wait()
      }
    ) { items in log.append(items) }
    // The first request is acknowledged when its batch commits, before the pause that follows.
    try await committer.submit([0])
    await pauseBegan.wait()
    try await withThrowingTaskGroup(of: Void.self) { group in
      for i in 1...5 { group.addTask { try await committer.submit([i]) } }
      while committer.queuedRequests < 5 { await Task.yield() }
      #expect(log.all.count == 1, "nothing is committed during the pause")
      pauseEnds.open()
      try await group.waitForAll()
    }
    let batches = log.all
    #expect(batches.count == 2, "\(batches)")
    #expect(batches.last.map { Set($0) } == Set(1...5), "what arrived during the pause shares one transaction: \(batches)")
  }

  /// A committer that logs every batch, holds the batch `[0]` until `gate` opens, and fails
  /// every batch holding `-1`.
  private static func heldAndFailing(_ gate: Gate, _ log: BatchLog) -> GroupCommitter<Int> {
    GroupCommitter<Int>(maxBatchItems: 100, closedError: CommitFailed()) { items in
      log.append(items)
      if items == [0] { await gate.wait() }
      if items.contains(-1) { throw CommitFailed() }
    }
  }

  @Test func callbackRequestsShareBatchesWithWaitingOnesAndLearnTheirOutcome() async throws {
    let gate = Gate()
    let log = BatchLog()
    let committer = Self.heldAndFailing(gate, log)
    let outcomes = Mutex<[Int: Bool]>([:])
    let submitted: @Sendable ([Int], Int) async -> Void = { items, request in
      await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
        committer.submit(items) { result in
          outcomes.withLock { $0[request] = (try? result.get()) != nil }
          done.resume()
        }
      }
    }
    await withTaskGroup(of: Void.self) { group in
      group.addTask { await submitted([0], 0) }
      while log.all.isEmpty { await Task.yield() }
      group.addTask { await submitted([1, 2], 1) }
      group.addTask { try? await committer.submit([3]) }
      while committer.queuedRequests < 2 { await Task.yield() }
      gate.open()
      await group.waitForAll()
      // A failing batch fails its callback requests too.
      await submitted([-1], 2)
    }
    #expect(outcomes.withLock { $0 } == [0: true, 1: true, 2: false])
    #expect(log.all.map { Set($0) } == [[0], [1, 2, 3], [-1]], "a callback and an awaited request shared one transaction")
    await committer.close()
    await submitted([4], 3)
    #expect(outcomes.withLock { $0[3] } == false, "refused once closed")
    await submitted([], 4)
    #expect(outcomes.withLock { $0[4] } == true, "nothing to write succeeds at once")
  }
}
