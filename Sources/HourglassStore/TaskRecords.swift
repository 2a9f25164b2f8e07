import HourglassCore

/// A blob with its content address, computed once so many tasks can share it cheaply.
public struct TaskBlob: Sendable, Hashable {
  /// The bytes.
  public let content: [UInt8]
  /// SHA-256 of the bytes.
  public let digest: BlobDigest

  /// Wraps `content` and computes its digest.
  public init(_ content: [UInt8]) {
    self.content = content
    self.digest = BlobDigest(of: content)
  }

  /// Wraps `content` with its SHA-256 `digest`, computed by the caller (e.g. with a hardware-
  /// accelerated library; HourglassCore's portable SHA-256 is several times slower). The digest
  /// names the stored copy, so it must be right: debug builds check it.
  public init(_ content: [UInt8], digest: BlobDigest) {
    assert(BlobDigest(of: content) == digest, "the digest is not the SHA-256 of the content")
    self.content = content
    self.digest = digest
  }
}

/// A task to insert. The store adds the partition, state, version and hour bucket.
public struct NewTask: Sendable, Hashable {
  /// Time-ordered id (UUIDv7), minted by the caller so a retried insert is idempotent.
  public var id: TaskID
  /// Who owns the task; reads and deletes must present the same owner.
  public var owner: String
  /// A label for humans.
  public var name: String
  /// Which operator runs it (e.g. `exec`).
  public var operatorName: String
  /// The binary or script to run, stored once per distinct content.
  public var blob: TaskBlob?
  /// Operator arguments.
  public var arguments: [String]
  /// IANA zone the schedule is evaluated in.
  public var timeZone: String
  /// The schedule as opaque bytes (JSON produced by the schedule model); the store never reads it.
  public var scheduleSpec: [UInt8]
  /// Whether the task has further runs after one finishes.
  public var recurring: Bool
  /// Higher runs first among entries due at the same time.
  public var priority: Int32
  /// Attempts allowed per run, at least 1.
  public var maxAttempts: Int32
  /// How long one attempt may run (µs).
  public var timeoutMicros: Int64
  /// The first run's scheduled time (UTC µs); nil inserts the task paused, with no run.
  public var firstRunMicros: Int64?
  /// Insertion time (UTC µs).
  public var createdAtMicros: Int64
  /// The client's idempotency key, if it sent one: the store inserts the task only if its owner
  /// has not used the key before (see ``TaskStore/taskID(idempotencyKey:owner:)``).
  public var idempotencyKey: String?

  /// Describes a task to insert.
  public init(
    id: TaskID, owner: String, name: String = "", operatorName: String, blob: TaskBlob? = nil,
    arguments: [String] = [], timeZone: String = "UTC", scheduleSpec: [UInt8] = [],
    recurring: Bool = false, priority: Int32 = 0, maxAttempts: Int32 = 1,
    timeoutMicros: Int64 = 3_600_000_000, firstRunMicros: Int64?, createdAtMicros: Int64,
    idempotencyKey: String? = nil
  ) {
    self.idempotencyKey = idempotencyKey
    self.id = id
    self.owner = owner
    self.name = name
    self.operatorName = operatorName
    self.blob = blob
    self.arguments = arguments
    self.timeZone = timeZone
    self.scheduleSpec = scheduleSpec
    self.recurring = recurring
    self.priority = priority
    self.maxAttempts = maxAttempts
    self.timeoutMicros = timeoutMicros
    self.firstRunMicros = firstRunMicros
    self.createdAtMicros = createdAtMicros
  }
}

extension NewTask {
  /// Throws ``TaskStoreError/invalidArgument(_:)`` when a store must refuse this task: no
  /// owner, no operator, fewer than one attempt, or a NUL character in a text field (which
  /// PostgreSQL's `text` refuses, failing the whole batch the task was committed with). Every
  /// store checks this before inserting.
  public func checkInsertable() throws {
    if owner.isEmpty { throw TaskStoreError.invalidArgument("owner is empty") }
    if operatorName.isEmpty { throw TaskStoreError.invalidArgument("operatorName is empty") }
    if maxAttempts < 1 { throw TaskStoreError.invalidArgument("maxAttempts must be at least 1") }
    let texts = [("owner", owner), ("name", name), ("operatorName", operatorName), ("timeZone", timeZone), ("idempotencyKey", idempotencyKey ?? "")]
    for (field, text) in texts where text.utf8.contains(0) {
      throw TaskStoreError.invalidArgument("\(field) contains a NUL character")
    }
    if arguments.contains(where: { $0.utf8.contains(0) }) { throw TaskStoreError.invalidArgument("an argument contains a NUL character") }
  }
}

extension Array where Element == NewTask {
  /// Why a store must refuse these tasks (``NewTask/checkInsertable()`` of the first that
  /// fails), or nil.
  public var insertRefusal: (any Error)? {
    do {
      for task in self { try task.checkInsertable() }
      return nil
    } catch {
      return error
    }
  }
}

/// A stored task as the store returns it.
public struct TaskRecord: Sendable, Hashable, Codable {
  /// The task id.
  public var id: TaskID
  /// The owner.
  public var owner: String
  /// A label for humans.
  public var name: String
  /// Which operator runs it.
  public var operatorName: String
  /// Content address of its blob, if any (fetch with ``TaskStore/blob(_:)``).
  public var blobDigest: BlobDigest?
  /// Operator arguments.
  public var arguments: [String]
  /// IANA zone of the schedule.
  public var timeZone: String
  /// The opaque schedule bytes as inserted.
  public var scheduleSpec: [UInt8]
  /// Whether the task recurs.
  public var recurring: Bool
  /// Dispatch priority.
  public var priority: Int32
  /// Attempts allowed per run.
  public var maxAttempts: Int32
  /// Per-attempt timeout (µs).
  public var timeoutMicros: Int64
  /// Lifecycle state.
  public var state: TaskState
  /// The partition the id hashes to.
  public var partition: Partition
  /// Scheduled time of the current (next or running) run, which names it in its ``RunID``.
  public var nextRunMicros: Int64?
  /// When that run should be dispatched: its scheduled time, or a retry's backoff time.
  public var dueMicros: Int64?
  /// Scheduled time of the last finished run.
  public var lastRunMicros: Int64?
  /// How the last finished run ended.
  public var lastRunState: RunState?
  /// Bumped on every change; the compare-and-set token for ``TaskStore/advance(taskID:expectedVersion:nextRunMicros:state:)``.
  public var version: Int64
  /// Insertion time.
  public var createdAtMicros: Int64
  /// Runs executed to an outcome so far (see ``RunState/countsAsCompleted``).
  public var runsCompleted: Int64

  /// Builds a record (backends use this).
  public init(
    id: TaskID, owner: String, name: String, operatorName: String, blobDigest: BlobDigest?,
    arguments: [String], timeZone: String, scheduleSpec: [UInt8], recurring: Bool,
    priority: Int32, maxAttempts: Int32, timeoutMicros: Int64, state: TaskState,
    partition: Partition, nextRunMicros: Int64?, dueMicros: Int64?, lastRunMicros: Int64?,
    lastRunState: RunState?, version: Int64, createdAtMicros: Int64, runsCompleted: Int64 = 0
  ) {
    self.id = id
    self.owner = owner
    self.name = name
    self.operatorName = operatorName
    self.blobDigest = blobDigest
    self.arguments = arguments
    self.timeZone = timeZone
    self.scheduleSpec = scheduleSpec
    self.recurring = recurring
    self.priority = priority
    self.maxAttempts = maxAttempts
    self.timeoutMicros = timeoutMicros
    self.state = state
    self.partition = partition
    self.nextRunMicros = nextRunMicros
    self.dueMicros = dueMicros
    self.lastRunMicros = lastRunMicros
    self.lastRunState = lastRunState
    self.version = version
    self.createdAtMicros = createdAtMicros
    self.runsCompleted = runsCompleted
  }

  /// The id of the current run, if the task has one.
  public var currentRunID: RunID? {
    nextRunMicros.map { RunID(taskID: id, scheduledMicros: $0) }
  }
}

/// What to list: a keyset page of one owner's tasks.
public struct TaskListQuery: Sendable, Hashable {
  /// Return tasks with ids strictly greater than this (the previous page's cursor).
  public var after: TaskID?
  /// Only these states; nil means every state but `deleted`.
  public var states: Set<TaskState>?
  /// Page size, at least 1.
  public var limit: Int
  /// The page stops early, with a cursor, before the tasks in it would weigh more than this
  /// (by ``TaskRecord/listingBytes``); it always holds at least one task. Nil: no bound.
  public var maxBytes: Int?

  /// Describes a page request.
  public init(after: TaskID? = nil, states: Set<TaskState>? = nil, limit: Int = 100, maxBytes: Int? = nil) {
    self.after = after
    self.states = states
    self.limit = limit
    self.maxBytes = maxBytes
  }
}

/// A page of a task's runs, newest scheduled first.
public struct RunPage: Sendable, Hashable {
  /// The runs.
  public var runs: [RunRecord]
  /// Whether older runs follow (read them with `before` = the last run's scheduled time).
  public var hasMore: Bool

  /// Builds a page.
  public init(runs: [RunRecord], hasMore: Bool) {
    self.runs = runs
    self.hasMore = hasMore
  }
}

/// A page of tasks and the cursor to the next one.
public struct TaskPage: Sendable, Hashable {
  /// The tasks, in id order.
  public var tasks: [TaskRecord]
  /// Pass as ``TaskListQuery/after`` for the next page; nil when this is the last page.
  public var nextCursor: TaskID?

  /// Builds a page.
  public init(tasks: [TaskRecord], nextCursor: TaskID?) {
    self.tasks = tasks
    self.nextCursor = nextCursor
  }
}

/// What a delete did.
public enum DeleteOutcome: Sendable, Hashable {
  /// The task is gone from dispatch; its row will be purged.
  case deleted
  /// The task had runs in progress (its current run, and with overlap `allow` runs detached
  /// from it that are still leased); they were cancelled (their fences no longer accepted) and
  /// the task deleted.
  case deletedCancellingRuns([RunID])
  /// The task has a run in progress (the earliest, if several) and cancellation was not
  /// requested (FAILED_PRECONDITION).
  case runInProgress(RunID)
  /// No such task for this owner (or already deleted).
  case notFound
}

/// One entry of a shard's due list: enough to place it in a timing wheel.
public struct DueEntry: Sendable, Hashable, Codable {
  /// The task.
  public var taskID: TaskID
  /// The scheduled time of the run (names the run).
  public var scheduledMicros: Int64
  /// When to dispatch it.
  public var dueMicros: Int64
  /// Dispatch priority among entries due together.
  public var priority: Int32

  /// Builds an entry.
  public init(taskID: TaskID, scheduledMicros: Int64, dueMicros: Int64, priority: Int32) {
    self.taskID = taskID
    self.scheduledMicros = scheduledMicros
    self.dueMicros = dueMicros
    self.priority = priority
  }

  /// The run this entry dispatches.
  public var runID: RunID { RunID(taskID: taskID, scheduledMicros: scheduledMicros) }

  /// Where the next page of due entries starts.
  public var cursor: DueCursor { DueCursor(dueMicros: dueMicros, taskID: taskID) }
}

/// A position in a shard's due entries, which are ordered by due time, then task id (compared as
/// bytes): the next page holds the entries strictly after it.
public struct DueCursor: Sendable, Hashable {
  /// The due time of the last entry read.
  public var dueMicros: Int64
  /// The task of the last entry read.
  public var taskID: TaskID

  /// Builds a cursor.
  public init(dueMicros: Int64, taskID: TaskID) {
    self.dueMicros = dueMicros
    self.taskID = taskID
  }
}

/// A stored run.
public struct RunRecord: Sendable, Hashable, Codable {
  /// The run id (task + scheduled time).
  public var id: RunID
  /// Attempts leased so far, from 1.
  public var attempt: Int32
  /// Run state.
  public var state: RunState
  /// Executor of the current or last lease.
  public var leaseOwner: String?
  /// Expiry of the current or last lease.
  public var leaseExpiresMicros: Int64?
  /// The current fence.
  public var fence: Fence
  /// When the current attempt was leased.
  public var startedMicros: Int64?
  /// When the run finished.
  public var finishedMicros: Int64?
  /// When a retrying run is due again.
  public var retryAtMicros: Int64?
  /// The process exit status, if it ran.
  public var exitStatus: Int32?
  /// The end of its output (capped by the caller).
  public var outputTail: [UInt8]
  /// Why it failed, if it did.
  public var error: String?

  /// Builds a record (backends use this).
  public init(
    id: RunID, attempt: Int32, state: RunState, leaseOwner: String?, leaseExpiresMicros: Int64?,
    fence: Fence, startedMicros: Int64?, finishedMicros: Int64?, retryAtMicros: Int64?,
    exitStatus: Int32?, outputTail: [UInt8], error: String?
  ) {
    self.id = id
    self.attempt = attempt
    self.state = state
    self.leaseOwner = leaseOwner
    self.leaseExpiresMicros = leaseExpiresMicros
    self.fence = fence
    self.startedMicros = startedMicros
    self.finishedMicros = finishedMicros
    self.retryAtMicros = retryAtMicros
    self.exitStatus = exitStatus
    self.outputTail = outputTail
    self.error = error
  }
}

/// The outcome of one attempt, and what the task does next (decided by the coordinator, which
/// knows the schedule and retry policy).
public struct RunResult: Sendable, Hashable {
  /// What happens to the task after this attempt.
  public enum Next: Sendable, Hashable {
    /// Try the same run again at this instant (the run becomes `retrying`).
    case retry(atMicros: Int64)
    /// The run is over; the task's next run is scheduled at this instant (recurring tasks).
    case reschedule(nextRunMicros: Int64)
    /// The run is over and the task has no more runs; it becomes `completed` or `dead`.
    case finish(TaskState)
    /// The run was detached from its task when it was leased (overlap `allow`): the task has
    /// moved on already, so only the run (and the task's last-run fields, if this run is the
    /// latest) is recorded.
    case runOnly
  }

  /// Final state of the run: `succeeded`, `failed`, `dead` or `cancelled` (ignored for `.retry`,
  /// which always leaves the run `retrying`).
  public var state: RunState
  /// When the attempt ended.
  public var finishedMicros: Int64
  /// When the attempt started, as its executor reported it (on the coordinator's clock); nil
  /// keeps the time the run's lease recorded.
  public var startedMicros: Int64?
  /// Process exit status.
  public var exitStatus: Int32?
  /// End of the output.
  public var outputTail: [UInt8]
  /// Failure reason.
  public var error: String?
  /// What the task does next.
  public var next: Next
  /// When set, the task's finished runs (succeeded, failed, dead, cancelled, skipped) scheduled
  /// before this instant are removed in the same transaction: the run-history retention of a
  /// recurring task, which would otherwise keep every run it ever had. Its `runsCompleted`
  /// count is not lowered.
  public var forgetRunsBeforeMicros: Int64?

  /// Describes a result.
  public init(
    state: RunState, finishedMicros: Int64, startedMicros: Int64? = nil, exitStatus: Int32? = nil, outputTail: [UInt8] = [],
    error: String? = nil, next: Next, forgetRunsBeforeMicros: Int64? = nil
  ) {
    self.state = state
    self.finishedMicros = finishedMicros
    self.startedMicros = startedMicros
    self.exitStatus = exitStatus
    self.outputTail = outputTail
    self.error = error
    self.next = next
    self.forgetRunsBeforeMicros = forgetRunsBeforeMicros
  }
}

/// Whether a result was accepted.
public enum RecordOutcome: Sendable, Hashable {
  /// Recorded, once.
  case recorded
  /// The fence is not the run's current one, or the run is no longer leased; nothing changed.
  case staleFence
}

/// What one purge removed.
public struct PurgeResult: Sendable, Hashable {
  /// Tasks removed, with their runs and idempotency keys.
  public var tasks: Int
  /// Blobs removed because none of the remaining tasks refers to them.
  public var blobs: Int

  /// A result of `tasks` tasks and `blobs` blobs.
  public init(tasks: Int, blobs: Int) {
    self.tasks = tasks
    self.blobs = blobs
  }
}

/// What one step of ``TaskStore/sweepBlobs(after:limit:)`` did.
public struct BlobSweep: Sendable, Hashable {
  /// Blobs looked at.
  public var examined: Int
  /// Blobs removed because no task refers to them.
  public var removed: Int
  /// Where the next step goes on; nil once the walk has reached the last blob.
  public var next: BlobDigest?

  /// A step that looked at `examined` blobs, removed `removed` and ends at `next`.
  public init(examined: Int, removed: Int, next: BlobDigest?) {
    self.examined = examined
    self.removed = removed
    self.next = next
  }
}

/// Counts for metrics.
public struct StoreCounts: Sendable, Hashable {
  /// Tasks per state (deleted-but-unpurged included under `deleted`).
  public var tasks: [TaskState: Int]
  /// Runs per state.
  public var runs: [RunState: Int]

  /// Builds counts.
  public init(tasks: [TaskState: Int], runs: [RunState: Int]) {
    self.tasks = tasks
    self.runs = runs
  }
}

extension RunResult {
  /// The state the run row takes when this result is recorded: `retrying` for a retry, else
  /// ``state``. Throws `invalidArgument` for a result no backend may record: a non-final state
  /// with a final next step, or a task finishing in a state other than completed or dead.
  public func recordedRunState() throws -> RunState {
    if case .finish(let taskState) = next, taskState != .completed && taskState != .dead {
      throw TaskStoreError.invalidArgument("a task finishes completed or dead, not \(taskState)")
    }
    switch next {
    case .retry:
      return .retrying
    case .reschedule, .finish, .runOnly:
      guard state.isTerminal else {
        throw TaskStoreError.invalidArgument("result.state \(state) is not final")
      }
      return state
    }
  }
}

extension RunState {
  /// The terminal states as an SQL list, `('succeeded', 'failed', …)`, for both backends'
  /// statements that must only touch runs that will not change again.
  public static let terminalSQLList: String =
    "(" + allCases.filter(\.isTerminal).map { "'\($0.rawValue)'" }.joined(separator: ", ") + ")"
}
