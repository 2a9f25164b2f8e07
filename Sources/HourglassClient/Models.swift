import Foundation

/// Where a task is in its life, as the service reports it.
public enum TaskStatus: String, Sendable, Hashable, CaseIterable, Codable {
  /// Waiting for its next run.
  case scheduled
  /// A run is leased to an executor.
  case running
  /// The last attempt failed and another is scheduled.
  case retrying
  /// A one-shot task's run succeeded, or a recurring task reached its end.
  case succeeded
  /// The last run used up its attempts (dead).
  case failed
  /// Deleted by its owner.
  case deleted
  /// Paused: no runs until resumed.
  case paused
}

/// The outcome of one run (or one attempt of it).
public enum RunStatus: String, Sendable, Hashable, CaseIterable, Codable {
  /// Due, not yet leased.
  case pending
  /// Leased to an executor.
  case running
  /// Finished with exit status 0 (or the operator's success).
  case succeeded
  /// This attempt failed; the task's retry policy decides what follows.
  case failed
  /// Failed after its last attempt.
  case dead
  /// Cancelled by its owner.
  case cancelled
  /// Not run, by the misfire or overlap policy.
  case skipped
  /// Killed when its timeout ran out.
  case timedOut = "timed_out"
  /// Its lease ran out; the run is dispatched again.
  case lost
}

/// When a task runs: once, by a cron expression, or at an interval, in an IANA time zone.
public struct TaskSchedule: Sendable, Hashable {
  /// The kind of schedule.
  public enum Kind: Sendable, Hashable {
    /// Once, at an instant.
    case at(Date)
    /// Once, at a wall-clock date-time (`2026-03-08T02:30:00`) in ``TaskSchedule/timeZone``.
    case atLocal(String)
    /// By a cron expression (5 fields, 6 with leading seconds, or `@daily` and friends),
    /// evaluated in ``TaskSchedule/timeZone``.
    case cron(String)
    /// Every `interval`, counted from `anchor` (the service's choice when `nil`).
    case every(Duration, anchor: Date?)
  }

  /// What to do with runs missed while the service could not run them.
  public enum Misfire: Sendable, Hashable {
    /// One catch-up run now; the others are counted as skipped (the default).
    case runOnce
    /// Every missed run, up to `limit`.
    case runAll(limit: Int)
    /// None: continue at the next future time.
    case skip
  }

  /// Whether a recurring task's next run may start while the previous one still runs.
  public enum Overlap: String, Sendable, Hashable {
    /// The next run is skipped while one is running (the default).
    case skip
    /// Runs may overlap.
    case allow
  }

  /// The kind of schedule.
  public var kind: Kind
  /// The IANA time zone that cron expressions and local times are read in.
  public var timeZone: String
  /// Whether the task runs more than once; a cron or interval schedule that is not recurring
  /// runs at its first time only.
  public var isRecurring: Bool
  /// No run before this instant.
  public var notBefore: Date?
  /// No run after this instant.
  public var notAfter: Date?
  /// At most this many runs.
  public var maxRuns: Int?
  /// A random delay of up to this much, the same for each run id.
  public var jitter: Duration?
  /// What to do with missed runs.
  public var misfire: Misfire
  /// Whether runs may overlap.
  public var overlap: Overlap
  /// What happens to wall times that daylight saving time skips, for cron schedules and local
  /// times (docs/schedules.md).
  public var dstGap: DSTGap
  /// What happens to wall times that daylight saving time repeats.
  public var dstOverlap: DSTOverlap

  /// A wall time that does not exist because clocks spring forward.
  public enum DSTGap: String, Sendable, Hashable, CaseIterable {
    /// A run at the first instant after the gap (the default).
    case runAfter = "run-after"
    /// No run for that wall time.
    case skip
  }

  /// A wall time that occurs twice because clocks fall back.
  public enum DSTOverlap: String, Sendable, Hashable, CaseIterable {
    /// One run, at the first occurrence (the default).
    case once
    /// A run at each occurrence.
    case both
  }

  /// Creates a schedule; prefer the static constructors.
  public init(
    kind: Kind, timeZone: String = "UTC", isRecurring: Bool, notBefore: Date? = nil, notAfter: Date? = nil, maxRuns: Int? = nil,
    jitter: Duration? = nil, misfire: Misfire = .runOnce, overlap: Overlap = .skip,
    dstGap: DSTGap = .runAfter, dstOverlap: DSTOverlap = .once
  ) {
    self.kind = kind
    self.timeZone = timeZone
    self.isRecurring = isRecurring
    self.notBefore = notBefore
    self.notAfter = notAfter
    self.maxRuns = maxRuns
    self.jitter = jitter
    self.misfire = misfire
    self.overlap = overlap
    self.dstGap = dstGap
    self.dstOverlap = dstOverlap
  }

  /// Once, at `date`.
  public static func at(_ date: Date) -> TaskSchedule {
    TaskSchedule(kind: .at(date), isRecurring: false)
  }

  /// Once, `delay` from now.
  public static func after(_ delay: Duration, from now: Date = Date()) -> TaskSchedule {
    .at(now.addingTimeInterval(delay / .seconds(1)))
  }

  /// Repeatedly, by a cron expression in an IANA time zone.
  public static func cron(_ expression: String, timeZone: String = "UTC") -> TaskSchedule {
    TaskSchedule(kind: .cron(expression), timeZone: timeZone, isRecurring: true)
  }

  /// Repeatedly, every `interval` from `anchor`.
  public static func every(_ interval: Duration, anchor: Date? = nil) -> TaskSchedule {
    TaskSchedule(kind: .every(interval, anchor: anchor), isRecurring: true)
  }
}

/// How a failed run is retried: exponential backoff with jitter.
public struct RetrySettings: Sendable, Hashable {
  /// Attempts in all, the first included.
  public var maxAttempts: Int
  /// The wait before the second attempt.
  public var initialBackoff: Duration
  /// How much each wait grows.
  public var multiplier: Double
  /// The longest wait.
  public var maxBackoff: Duration
  /// The random fraction (0–1) taken off or added to each wait.
  public var jitter: Double

  /// Creates retry settings.
  public init(maxAttempts: Int, initialBackoff: Duration = .seconds(1), multiplier: Double = 2, maxBackoff: Duration = .seconds(300), jitter: Double = 0.2) {
    self.maxAttempts = maxAttempts
    self.initialBackoff = initialBackoff
    self.multiplier = multiplier
    self.maxBackoff = maxBackoff
    self.jitter = jitter
  }
}

/// A task to schedule: what runs (a binary and the operator that runs it) and when.
public struct TaskDefinition: Sendable, Hashable {
  /// When it runs.
  public var schedule: TaskSchedule
  /// The blob the operator runs; for `exec`, an executable (a script with `#!` or an ELF file).
  public var blob: [UInt8]
  /// The executor-side operator that runs the blob; `exec` by default.
  public var operatorName: String
  /// Arguments passed to the binary.
  public var arguments: [String]
  /// A name for people; need not be unique.
  public var name: String
  /// Among runs due together, higher goes first (-100…100).
  public var priority: Int
  /// How failures are retried; the service's default when `nil`.
  public var retry: RetrySettings?
  /// How long one attempt may run; the service's default when `nil`.
  public var timeout: Duration?
  /// Scheduling again with the same key returns the first task instead of making another.
  /// The client fills in a fresh key when `nil`, so its own retries never duplicate a task.
  public var idempotencyKey: String?

  /// Creates a task definition.
  public init(
    schedule: TaskSchedule, blob: [UInt8], operatorName: String = "exec", arguments: [String] = [], name: String = "", priority: Int = 0,
    retry: RetrySettings? = nil, timeout: Duration? = nil, idempotencyKey: String? = nil
  ) {
    self.schedule = schedule
    self.blob = blob
    self.operatorName = operatorName
    self.arguments = arguments
    self.name = name
    self.priority = priority
    self.retry = retry
    self.timeout = timeout
    self.idempotencyKey = idempotencyKey
  }
}

/// The answer to a Schedule call.
public struct ScheduledTask: Sendable, Hashable {
  /// The new task's id.
  public var taskID: String
  /// Its first run.
  public var nextExecution: Date?
}

/// A task as the service knows it.
public struct TaskDetails: Sendable, Hashable {
  /// The task's id.
  public var taskID: String
  /// Where it is in its life.
  public var status: TaskStatus
  /// When its last run was scheduled for.
  public var lastExecuted: Date?
  /// When its next run is due; `nil` once it is over.
  public var nextExecution: Date?
  /// Its name.
  public var name: String
  /// The operator that runs it.
  public var operatorName: String
  /// Its schedule.
  public var schedule: TaskSchedule?
  /// Whether it runs more than once.
  public var isRecurring: Bool
  /// Its priority.
  public var priority: Int
  /// The status of its last finished run.
  public var lastRunStatus: RunStatus?
  /// When it was created.
  public var created: Date?
  /// The SHA-256 of its blob, hex.
  public var blobSHA256: String
  /// Runs executed to an outcome so far (succeeded, failed or dead; a run's retried attempts
  /// count once, cancelled and skipped runs not at all), from `TaskInfo.runs_completed`.
  public var runsCompleted: Int
  /// Its retry policy.
  public var retry: RetrySettings?
  /// How long one attempt may run.
  public var timeout: Duration?
  /// The binary's arguments.
  public var arguments: [String]
}

/// One attempt of one run of a task.
public struct RunDetails: Sendable, Hashable {
  /// The deterministic run id (`task id @ scheduled microseconds`), given to the binary as
  /// `HOURGLASS_RUN_ID`.
  public var runID: String
  /// The task's id.
  public var taskID: String
  /// When the run was due.
  public var scheduledAt: Date
  /// The attempt, from 1.
  public var attempt: Int
  /// How it went.
  public var status: RunStatus
  /// When the executor started it.
  public var started: Date?
  /// When it finished.
  public var finished: Date?
  /// The binary's exit status.
  public var exitCode: Int32
  /// Why it failed, if it did.
  public var error: String
  /// The last bytes (at most 64 KiB) of its output.
  public var outputTail: [UInt8]
  /// The executor that ran it.
  public var executor: String
}
