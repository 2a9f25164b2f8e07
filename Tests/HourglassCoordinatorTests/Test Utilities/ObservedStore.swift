import HourglassCore
import HourglassStore
import Synchronization

/// A store that forwards every call to another one, noting (on the test's manual clock) when the
/// coordinator read dispatch records, able to hold lease recovery at a gate, and to fail reads
/// of due entries and of dispatch records on demand.
final class ObservedStore: TaskStore {
  private struct State {
    /// Each `dispatchRecords` or `dispatchRecord` call: its task ids and the clock's instant.
    var recordReads: [(ids: Set<TaskID>, atMicros: Int64)] = []
    var readWaiters: [(id: TaskID, continuation: CheckedContinuation<Void, Never>)] = []
    /// `createLeases` calls so far, and who waits for a number of them.
    var leaseCalls = 0
    var leaseWaiters: [(count: Int, continuation: CheckedContinuation<Void, Never>)] = []
    /// Blob reads so far, and the one (1-based) that ``blobGate`` holds.
    var blobReads = 0
    /// While true, recording results fails as a store that lost its database would.
    var failResults = false
    /// While true, reading due entries (`loadDue`, `firstDueBucket`) fails; the clock instants
    /// of the reads that failed, and who waits for one.
    var failLoads = false
    var failedLoads: [Int64] = []
    var failedLoadWaiters: [(atOrAfter: Int64, continuation: CheckedContinuation<Void, Never>)] = []
    /// The next `dispatchRecords` calls to fail.
    var recordReadsToFail = 0
    var holdBlobRead: Int?
  }

  let base: any TaskStore
  let clock: ManualClock
  private let state = Mutex(State())
  /// Holds the next `recoverExpiredLeases` call, the next `createLeases` call once its
  /// transaction has committed, and a chosen blob read (with its digest).
  private let recoveryGate = Gate<Void>()
  private let leaseGate = Gate<Void>()
  private let blobGate = Gate<BlobDigest>()
  private let resultGate = Gate<Void>()
  private let insertGate = Gate<Void>()

  init(_ base: any TaskStore, clock: ManualClock) {
    self.base = base
    self.clock = clock
  }

  /// The clock instants at which dispatch records including `id` were read.
  func recordReads(of id: TaskID) -> [Int64] {
    state.withLock { $0.recordReads.filter { $0.ids.contains(id) }.map(\.atMicros) }
  }

  /// Returns once dispatch records including `id` have been read, or when the test is
  /// cancelled (its time limit).
  func waitForRecordRead(of id: TaskID) async {
    await withTaskCancellationHandler {
      await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        let done = state.withLock { state -> Bool in
          if Task.isCancelled || state.recordReads.contains(where: { $0.ids.contains(id) }) { return true }
          state.readWaiters.append((id, continuation))
          return false
        }
        if done { continuation.resume() }
      }
    } onCancel: {
      let waiters = state.withLock { state in
        defer { state.readWaiters.removeAll { $0.id == id } }
        return state.readWaiters.filter { $0.id == id }.map(\.continuation)
      }
      for waiter in waiters { waiter.resume() }
    }
  }

  /// The next lease recovery waits until ``releaseRecovery()``.
  func holdNextRecovery() { recoveryGate.arm() }

  /// Returns once a held recovery has started (and is waiting), or when the test is cancelled.
  func waitUntilRecoveryHeld() async { _ = await recoveryGate.waitUntilHeld() }

  func releaseRecovery() { recoveryGate.release() }

  var partitionCount: Int32 { base.partitionCount }

  func insert(_ tasks: [NewTask]) async throws -> [TaskID] {
    await insertGate.pass(())
    return try await base.insert(tasks)
  }

  /// The next insert waits until ``releaseInserts()``.
  func holdInserts() { insertGate.arm() }

  /// Returns once an insert is held (or the test is cancelled).
  func waitForHeldInsert() async { _ = await insertGate.waitUntilHeld() }

  /// Lets the held insert go on.
  func releaseInserts() { insertGate.release() }
  func taskID(idempotencyKey key: String, owner: String) async throws -> TaskID? { try await base.taskID(idempotencyKey: key, owner: owner) }
  func task(id: TaskID, owner: String) async throws -> TaskRecord? { try await base.task(id: id, owner: owner) }
  func dispatchRecord(taskID: TaskID) async throws -> TaskRecord? {
    noteRecordRead([taskID])
    return try await base.dispatchRecord(taskID: taskID)
  }
  func listTasks(owner: String, query: TaskListQuery) async throws -> TaskPage { try await base.listTasks(owner: owner, query: query) }
  func deleteTask(id: TaskID, owner: String, cancelRunning: Bool, now: Int64) async throws -> DeleteOutcome {
    try await base.deleteTask(id: id, owner: owner, cancelRunning: cancelRunning, now: now)
  }
  func purgeDeleted(before: Int64, limit: Int) async throws -> PurgeResult { try await base.purgeDeleted(before: before, limit: limit) }
  func purgeFinished(before: Int64, limit: Int) async throws -> PurgeResult { try await base.purgeFinished(before: before, limit: limit) }
  func sweepBlobs(after: BlobDigest?, limit: Int) async throws -> BlobSweep { try await base.sweepBlobs(after: after, limit: limit) }
  func loadDue(shard: ShardID, from: Int64, until: Int64, after: DueCursor?, limit: Int) async throws -> [DueEntry] {
    try checkLoadsWork()
    return try await base.loadDue(shard: shard, from: from, until: until, after: after, limit: limit)
  }
  func firstDueBucket(partition: Partition, atOrAfter bucket: HourBucket) async throws -> HourBucket? {
    try checkLoadsWork()
    return try await base.firstDueBucket(partition: partition, atOrAfter: bucket)
  }

  /// Makes reading due entries fail (true) or work again (false).
  func failLoads(_ fail: Bool) { state.withLock { $0.failLoads = fail } }

  /// Returns once a read of due entries failed at or after the clock's instant `micros`.
  func waitForFailedLoad(atOrAfter micros: Int64) async {
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
      let done = state.withLock { state -> Bool in
        if state.failedLoads.contains(where: { $0 >= micros }) { return true }
        state.failedLoadWaiters.append((micros, continuation))
        return false
      }
      if done { continuation.resume() }
    }
  }

  private func checkLoadsWork() throws {
    let now = clock.nowMicros()
    let (fail, ready) = state.withLock { state -> (Bool, [CheckedContinuation<Void, Never>]) in
      guard state.failLoads else { return (false, []) }
      state.failedLoads.append(now)
      let ready = state.failedLoadWaiters.filter { $0.atOrAfter <= now }.map(\.continuation)
      state.failedLoadWaiters.removeAll { $0.atOrAfter <= now }
      return (true, ready)
    }
    for waiter in ready { waiter.resume() }
    if fail { throw InjectedFailure() }
  }

  /// Makes the next `count` calls of `dispatchRecords` fail.
  func failRecordReads(_ count: Int) { state.withLock { $0.recordReadsToFail = count } }
  func createLease(taskID: TaskID, owner: String, now: Int64, expiresAt: Int64) async throws -> Lease {
    try await base.createLease(taskID: taskID, owner: owner, now: now, expiresAt: expiresAt)
  }
  func createLeases(_ requests: [LeaseRequest], now: Int64) async throws -> [Lease?] {
    let leases = try await base.createLeases(requests, now: now)
    let ready = state.withLock { state -> [CheckedContinuation<Void, Never>] in
      state.leaseCalls += 1
      let count = state.leaseCalls
      defer { state.leaseWaiters.removeAll { $0.count <= count } }
      return state.leaseWaiters.filter { $0.count <= count }.map(\.continuation)
    }
    for waiter in ready { waiter.resume() }
    await leaseGate.pass(())
    return leases
  }

  /// The next lease transaction, once committed, does not return to the coordinator until
  /// ``releaseLeases()``: its leases exist in the store, and the dispatcher does not know yet.
  func holdNextLeasesAfterCommit() { leaseGate.arm() }

  func releaseLeases() { leaseGate.release() }

  /// Returns once `count` lease transactions have committed, or when the test is cancelled.
  func waitForLeaseTransactions(_ count: Int) async {
    await withTaskCancellationHandler {
      await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        let done = state.withLock { state -> Bool in
          if Task.isCancelled || state.leaseCalls >= count { return true }
          state.leaseWaiters.append((count, continuation))
          return false
        }
        if done { continuation.resume() }
      }
    } onCancel: {
      let waiters = state.withLock { state in
        defer { state.leaseWaiters.removeAll() }
        return state.leaseWaiters.map(\.continuation)
      }
      for waiter in waiters { waiter.resume() }
    }
  }

  func dispatchRecords(taskIDs: [TaskID]) async throws -> [TaskID: TaskRecord] {
    let fail = state.withLock { state -> Bool in
      guard state.recordReadsToFail > 0 else { return false }
      state.recordReadsToFail -= 1
      return true
    }
    if fail { throw InjectedFailure() }
    noteRecordRead(taskIDs)
    return try await base.dispatchRecords(taskIDs: taskIDs)
  }

  /// Notes a read of dispatch records (one call, by either method) and wakes who waits for it.
  private func noteRecordRead(_ taskIDs: [TaskID]) {
    let now = clock.nowMicros()
    let ids = Set(taskIDs)
    let ready = state.withLock { state -> [CheckedContinuation<Void, Never>] in
      state.recordReads.append((ids, now))
      let ready = state.readWaiters.filter { ids.contains($0.id) }.map(\.continuation)
      state.readWaiters.removeAll { ids.contains($0.id) }
      return ready
    }
    for waiter in ready { waiter.resume() }
  }

  func detachRun(_ runID: RunID, nextRunMicros: Int64) async throws -> Bool { try await base.detachRun(runID, nextRunMicros: nextRunMicros) }
  func renewLease(runID: RunID, fence: Fence, expiresAt: Int64) async throws { try await base.renewLease(runID: runID, fence: fence, expiresAt: expiresAt) }
  func renewLeases(_ items: [LeaseRenewalRequest]) async throws -> [Bool] { try await base.renewLeases(items) }
  func recordResult(runID: RunID, fence: Fence, result: RunResult) async throws -> RecordOutcome {
    await resultGate.pass(())
    try checkResultsWork()
    return try await base.recordResult(runID: runID, fence: fence, result: result)
  }
  func recordResults(_ items: [ResultRecord]) async throws -> [RecordOutcome] {
    await resultGate.pass(())
    try checkResultsWork()
    return try await base.recordResults(items)
  }

  /// The next call recording results waits until ``releaseResults()``.
  func holdResults() { resultGate.arm() }

  /// Returns once a call recording results is held (or the test is cancelled).
  func waitForHeldResults() async { _ = await resultGate.waitUntilHeld() }

  /// Lets the held call recording results go on.
  func releaseResults() { resultGate.release() }

  /// Makes recording results fail (true) or work again (false).
  func failResults(_ fail: Bool) { state.withLock { $0.failResults = fail } }

  struct InjectedFailure: Error {}

  private func checkResultsWork() throws {
    if state.withLock({ $0.failResults }) { throw InjectedFailure() }
  }

  func recoverExpiredLeases(now: Int64, skewBound: Int64, limit: Int) async throws -> [RunRecord] {
    await recoveryGate.pass(())
    return try await base.recoverExpiredLeases(now: now, skewBound: skewBound, limit: limit)
  }

  func advance(taskID: TaskID, expectedVersion: Int64, nextRunMicros: Int64?, state: TaskState) async throws -> Int64? {
    try await base.advance(taskID: taskID, expectedVersion: expectedVersion, nextRunMicros: nextRunMicros, state: state)
  }
  func runPage(taskID: TaskID, owner: String, before: Int64?, limit: Int, maxBytes: Int?) async throws -> RunPage {
    try await base.runPage(taskID: taskID, owner: owner, before: before, limit: limit, maxBytes: maxBytes)
  }
  func blob(_ digest: BlobDigest) async throws -> [UInt8]? {
    let hold = state.withLock { state -> Bool in
      state.blobReads += 1
      return state.blobReads == state.holdBlobRead
    }
    if hold { await blobGate.pass(digest) }
    return try await base.blob(digest)
  }

  /// The `count`-th blob read from now on waits until ``releaseBlobRead()``.
  func holdBlobRead(_ count: Int) {
    blobGate.arm()
    state.withLock { $0.holdBlobRead = $0.blobReads + count }
  }

  /// The digest of the held blob read, once it waits (nil if the test is cancelled first).
  func waitForHeldBlobRead() async -> BlobDigest? { await blobGate.waitUntilHeld() }

  func releaseBlobRead() { blobGate.release() }
  func counts() async throws -> StoreCounts { try await base.counts() }
  func close() async throws { try await base.close() }
}
