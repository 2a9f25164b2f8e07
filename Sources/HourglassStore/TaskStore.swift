import HourglassCore

/// The durable task store: the single source of truth for tasks, runs and leases.
///
/// A call that returns without throwing has been committed durably (for SQLite with the default
/// `synchronous=FULL`, synced to disk); a call that throws has changed nothing the caller can
/// rely on. All instants are UTC microseconds (`Int64`).
///
/// Reads and deletes take the owner: another owner's task is reported exactly like a missing one.
/// Every state change of a run is a compare-and-set on the run's state and fence, so a stale
/// executor or a paused coordinator cannot overwrite newer work.
public protocol TaskStore: Sendable {
  /// The number of partitions task ids are hashed into; fixed when the store is created.
  var partitionCount: Int32 { get }

  /// Durably inserts tasks. Concurrent calls are gathered into one transaction (group commit),
  /// and each returns once the transaction holding its tasks has committed. Inserting an id that
  /// already exists is a no-op, so a client may retry a timed-out insert with the same ids.
  ///
  /// Returns, for each task in order, the id of the task that stands for it: its own, or — when
  /// its owner had already used its idempotency key (before, or earlier in the same call) — the
  /// task that key stands for, and then this one was not inserted. A caller answering a retried
  /// request learns the original task from the insert itself, with no read before or after.
  @discardableResult
  func insert(_ tasks: [NewTask]) async throws -> [TaskID]

  /// ``insert(_:)`` without waiting: `completion` is told its outcome once, from whichever task
  /// or thread finished the write (it must not block). For callers that are not tasks, such as
  /// a handler answering on an event loop. The default implementation runs ``insert(_:)`` in a
  /// task; a store with a group committer hands the tasks to it directly.
  func insert(_ tasks: [NewTask], completion: @escaping @Sendable (Result<[TaskID], any Error>) -> Void)

  /// The id of the task `owner` created with idempotency key `key`, if any, deleted or not. A
  /// task inserted with a key that its owner already used is not inserted (the insert still
  /// succeeds), so after an insert this names the one task the key stands for.
  func taskID(idempotencyKey key: String, owner: String) async throws -> TaskID?

  /// The task `id` if it exists, is not deleted, and belongs to `owner`.
  func task(id: TaskID, owner: String) async throws -> TaskRecord?

  /// The task `id` whatever its owner, if it exists and is not deleted. For the coordinator's
  /// own use when dispatching and recording results; never answer a user with it.
  func dispatchRecord(taskID: TaskID) async throws -> TaskRecord?

  /// One page of `owner`'s tasks in id (creation) order, after `query.after`.
  func listTasks(owner: String, query: TaskListQuery) async throws -> TaskPage

  /// Deletes a task. A task with no run in progress disappears from ``loadDue(shard:from:until:after:limit:)``
  /// at once (its row is purged later); a task with a leased run is left alone unless
  /// `cancelRunning` is true, in which case the run is cancelled and its fence voided.
  func deleteTask(
    id: TaskID, owner: String, cancelRunning: Bool, now: Int64
  ) async throws
    -> DeleteOutcome

  /// Removes the rows of at most `limit` tasks deleted before `before`, with their runs and
  /// idempotency keys, and the blobs no remaining task refers to; returns how many of each.
  func purgeDeleted(before: Int64, limit: Int) async throws -> PurgeResult

  /// Removes the rows of at most `limit` finished tasks (completed or dead) whose last run was
  /// scheduled before `before` (created before it, for a task that never ran), with their runs
  /// and idempotency keys, and the blobs no remaining task refers to; returns how many of each.
  /// Active, running and paused tasks are never touched. The coordinator calls this to keep the
  /// store's size bounded (its retention).
  func purgeFinished(before: Int64, limit: Int) async throws -> PurgeResult

  /// Looks at at most `limit` stored blobs, in digest order from the first after `after` (from
  /// the first of all when nil), and removes those no task refers to. The purges already remove
  /// the blobs of the tasks they remove; this walk is the safety net for blobs left without a
  /// task some other way (a PostgreSQL purge interrupted between its two transactions, or a
  /// store written by a version that did not collect blobs). A blob being stored with a new task
  /// at the same moment is never removed.
  func sweepBlobs(after: BlobDigest?, limit: Int) async throws -> BlobSweep

  /// At most `limit` dispatchable entries of a shard whose due time is in `from ..< until`, in
  /// (due time, task id) order, starting after `after` when it is given. Page with
  /// ``DueEntry/cursor``: the due time alone is not a cursor, since any number of entries may be
  /// due at the same instant.
  func loadDue(
    shard: ShardID, from: Int64, until: Int64, after: DueCursor?, limit: Int
  ) async throws
    -> [DueEntry]

  /// The first hour bucket at or after `bucket` that holds a dispatchable entry of
  /// `partition`, or nil if none does (one index probe). A coordinator back from a downtime of
  /// any length, or taking over a partition, finds every overdue run with it without reading
  /// each empty hour in between.
  func firstDueBucket(partition: Partition, atOrAfter bucket: HourBucket) async throws -> HourBucket?

  /// Leases the run of `taskID` scheduled at the task's current next-run time to `owner` until
  /// `expiresAt`, with a fresh fence. Fails with ``TaskStoreError/notDispatchable(_:)`` unless
  /// the task is active and that run is pending or retrying.
  func createLease(
    taskID: TaskID, owner: String, now: Int64, expiresAt: Int64
  ) async throws
    -> Lease

  /// Many ``createLease(taskID:owner:now:expiresAt:)`` calls in one durable transaction, each
  /// with the same checks plus one more: the task's next run must still be
  /// `request.scheduledMicros`. Returns one element per request, in order: the lease, or nil
  /// where that run is not dispatchable (the others are unaffected). Throws, and leases nothing,
  /// if the transaction fails.
  func createLeases(_ requests: [LeaseRequest], now: Int64) async throws -> [Lease?]

  /// The tasks among `taskIDs` that exist and are not deleted, whatever their owner (the batch
  /// form of ``dispatchRecord(taskID:)``, for the coordinator's own use).
  func dispatchRecords(taskIDs: [TaskID]) async throws -> [TaskID: TaskRecord]

  /// Overlap `allow`: moves the task whose run `runID` is leased on to its next run at
  /// `nextRunMicros` (active, due then), leaving that run leased, so the next run can be
  /// dispatched while this one goes on; its result is then recorded with
  /// ``RunResult/Next/runOnly``. Returns false, and changes nothing, unless the task is running
  /// that very run.
  func detachRun(_ runID: RunID, nextRunMicros: Int64) async throws -> Bool

  /// Extends a lease. Fails with ``TaskStoreError/staleFence(_:)`` unless `fence` is the run's
  /// current fence and the run is still leased.
  func renewLease(runID: RunID, fence: Fence, expiresAt: Int64) async throws

  /// Many ``renewLease(runID:fence:expiresAt:)`` calls in one durable transaction, each its own
  /// compare-and-set on the fence; for each item, in order, whether its lease was extended.
  /// Throws, and extends nothing, if the transaction fails.
  func renewLeases(_ items: [LeaseRenewalRequest]) async throws -> [Bool]

  /// Records the result of a leased run and moves its task on, atomically, only if `fence` is the
  /// run's current fence and the run is still leased (compare-and-set). Returns `.staleFence`, and
  /// changes nothing, otherwise.
  func recordResult(runID: RunID, fence: Fence, result: RunResult) async throws -> RecordOutcome

  /// Many ``recordResult(runID:fence:result:)`` calls in one durable transaction, each its own
  /// compare-and-set; one outcome per item, in order. Throws, and records nothing, if the
  /// transaction fails.
  func recordResults(_ items: [ResultRecord]) async throws -> [RecordOutcome]

  /// Returns leased runs whose lease ran out before `now - skewBound` to `pending`, and their tasks
  /// to `active` and due at `now`, so they are dispatched again (as the same run, with a new fence).
  /// A run whose lease ran out on its task's last allowed attempt (`attempt >= maxAttempts`) is
  /// not sent again: it is returned still `leased`, with its fence, for the caller to record it
  /// dead (and move its task on) with ``recordResults(_:)``; until then every call returns it.
  /// A run detached from its task (overlap `allow`) ends `dead` here and is not returned.
  func recoverExpiredLeases(now: Int64, skewBound: Int64, limit: Int) async throws -> [RunRecord]

  /// Moves an active, paused or completed task to its next run without a run result (after a
  /// misfire skip, a pause, a schedule edit), only if its version is still `expectedVersion`.
  /// `nextRunMicros == nil` completes the task. Returns the new version, or nil if the version
  /// did not match or the task is running or gone.
  func advance(
    taskID: TaskID, expectedVersion: Int64, nextRunMicros: Int64?, state: TaskState
  )
    async throws -> Int64?

  /// A page of the runs of a task of `owner`, newest scheduled first, before `before` if
  /// given: at most `limit` runs, and (when `maxBytes` is given) stopping before the runs in it
  /// would weigh more than `maxBytes` by ``RunRecord/listingBytes`` (it always holds at least
  /// one run). Throws ``TaskStoreError/taskNotFound(_:)`` for a missing, deleted or other
  /// owner's task.
  func runPage(taskID: TaskID, owner: String, before: Int64?, limit: Int, maxBytes: Int?) async throws -> RunPage

  /// The blob with this digest, if stored.
  func blob(_ digest: BlobDigest) async throws -> [UInt8]?

  /// Task and run counts by state, for metrics.
  func counts() async throws -> StoreCounts

  /// Stops background work and closes connections; pending inserts fail.
  func close() async throws
}

/// One lease asked of ``TaskStore/createLeases(_:now:)``.
public struct LeaseRequest: Sendable, Hashable {
  /// The task whose next run is leased.
  public var taskID: TaskID
  /// The run the caller means: the task's next run time when it was read. If the task has moved
  /// on since, no lease is created.
  public var scheduledMicros: Int64
  /// The executor the lease goes to.
  public var owner: String
  /// When the lease runs out without renewal.
  public var expiresAt: Int64
  /// Overlap `allow`: the task's next run. The leased run is detached from its task in the same
  /// transaction (see ``TaskStore/detachRun(_:nextRunMicros:)``); nil leases as usual.
  public var advanceTo: Int64?

  /// Creates a request.
  public init(taskID: TaskID, scheduledMicros: Int64, owner: String, expiresAt: Int64, advanceTo: Int64? = nil) {
    self.taskID = taskID
    self.scheduledMicros = scheduledMicros
    self.owner = owner
    self.expiresAt = expiresAt
    self.advanceTo = advanceTo
  }
}

/// One renewal given to ``TaskStore/renewLeases(_:)``.
public struct LeaseRenewalRequest: Sendable, Hashable {
  /// The leased run.
  public var runID: RunID
  /// The fence the renewing executor holds.
  public var fence: Fence
  /// The lease's new expiry (µs).
  public var expiresAt: Int64

  /// Creates a renewal.
  public init(runID: RunID, fence: Fence, expiresAt: Int64) {
    self.runID = runID
    self.fence = fence
    self.expiresAt = expiresAt
  }
}

/// One result given to ``TaskStore/recordResults(_:)``.
public struct ResultRecord: Sendable, Hashable {
  /// The run.
  public var runID: RunID
  /// The fence of the lease the result was produced under.
  public var fence: Fence
  /// What happened and what the task does next.
  public var result: RunResult

  /// Creates an item.
  public init(runID: RunID, fence: Fence, result: RunResult) {
    self.runID = runID
    self.fence = fence
    self.result = result
  }
}

extension TaskStore {
  /// One ``createLease(taskID:owner:now:expiresAt:)`` per request, for backends without a batch
  /// path: correct, but one transaction each; the next-run check is a read before each lease,
  /// so a task that moves on between the two is leased at its new run (the lease names it).
  public func createLeases(_ requests: [LeaseRequest], now: Int64) async throws -> [Lease?] {
    var leases: [Lease?] = []
    leases.reserveCapacity(requests.count)
    for request in requests {
      guard let record = try await dispatchRecord(taskID: request.taskID), record.nextRunMicros == request.scheduledMicros else {
        leases.append(nil)
        continue
      }
      do {
        let lease = try await createLease(taskID: request.taskID, owner: request.owner, now: now, expiresAt: request.expiresAt)
        if let next = request.advanceTo {
          _ = try await detachRun(lease.runID, nextRunMicros: next)
        }
        leases.append(lease)
      } catch TaskStoreError.notDispatchable, TaskStoreError.taskNotFound {
        leases.append(nil)
      }
    }
    return leases
  }

  /// One ``dispatchRecord(taskID:)`` per id, for backends without a batch path.
  public func dispatchRecords(taskIDs: [TaskID]) async throws -> [TaskID: TaskRecord] {
    var records: [TaskID: TaskRecord] = [:]
    for id in taskIDs {
      if let record = try await dispatchRecord(taskID: id) { records[id] = record }
    }
    return records
  }

  /// One ``renewLease(runID:fence:expiresAt:)`` per item, for backends without a batch path.
  public func renewLeases(_ items: [LeaseRenewalRequest]) async throws -> [Bool] {
    var renewed: [Bool] = []
    renewed.reserveCapacity(items.count)
    for item in items {
      do {
        try await renewLease(runID: item.runID, fence: item.fence, expiresAt: item.expiresAt)
        renewed.append(true)
      } catch TaskStoreError.staleFence {
        renewed.append(false)
      }
    }
    return renewed
  }

  /// One ``recordResult(runID:fence:result:)`` per item, for backends without a batch path.
  public func recordResults(_ items: [ResultRecord]) async throws -> [RecordOutcome] {
    var outcomes: [RecordOutcome] = []
    outcomes.reserveCapacity(items.count)
    for item in items {
      outcomes.append(try await recordResult(runID: item.runID, fence: item.fence, result: item.result))
    }
    return outcomes
  }
}

extension TaskStore {
  /// The first page of ``loadDue(shard:from:until:after:limit:)``.
  public func loadDue(shard: ShardID, from: Int64, until: Int64, limit: Int) async throws -> [DueEntry] {
    try await loadDue(shard: shard, from: from, until: until, after: nil, limit: limit)
  }
}

extension TaskStore {
  /// The runs of a task of `owner`, newest scheduled first, before `before` if given: at most
  /// `limit` of them (``runPage(taskID:owner:before:limit:maxBytes:)`` without a size bound).
  public func runs(taskID: TaskID, owner: String, before: Int64?, limit: Int) async throws -> [RunRecord] {
    try await runPage(taskID: taskID, owner: owner, before: before, limit: limit, maxBytes: nil).runs
  }
}

extension TaskStore {
  /// Runs ``insert(_:)`` in a task and tells `completion` its outcome.
  public func insert(_ tasks: [NewTask], completion: @escaping @Sendable (Result<[TaskID], any Error>) -> Void) {
    completeInTask(completion) { try await insert(tasks) }
  }
}
