import Foundation
import HourglassProto

/// The client's Swift types ↔ the `hourglass.v1` messages.
enum WireConversion {
  static func request(_ task: TaskDefinition, userID: String, idempotencyKey: String) -> Hourglass_V1_ScheduleRequest {
    var request = Hourglass_V1_ScheduleRequest()
    request.userID = userID
    request.taskBlob = Data(task.blob)
    request.schedule = schedule(task.schedule)
    request.isRecurring = task.schedule.isRecurring
    request.operator = task.operatorName
    request.arguments = task.arguments
    request.name = task.name
    request.priority = Int32(clamping: task.priority)
    if let retry = task.retry { request.retry = self.retry(retry) }
    if let timeout = task.timeout { request.timeout = ProtoTime.duration(timeout) }
    request.idempotencyKey = idempotencyKey
    return request
  }

  static func schedule(_ schedule: TaskSchedule) -> Hourglass_V1_ScheduleSpec {
    var wire = Hourglass_V1_ScheduleSpec()
    switch schedule.kind {
    case .at(let date):
      var once = Hourglass_V1_OnceSchedule()
      once.instant = ProtoTime.timestamp(date)
      wire.once = once
    case .atLocal(let text):
      var once = Hourglass_V1_OnceSchedule()
      once.localDateTime = text
      wire.once = once
    case .cron(let expression):
      var cron = Hourglass_V1_CronSchedule()
      cron.expression = expression
      wire.cron = cron
    case .every(let interval, let anchor):
      var every = Hourglass_V1_IntervalSchedule()
      every.every = ProtoTime.duration(interval)
      if let anchor { every.anchor = ProtoTime.timestamp(anchor) }
      wire.interval = every
    }
    wire.timeZone = schedule.timeZone
    if let notBefore = schedule.notBefore { wire.notBefore = ProtoTime.timestamp(notBefore) }
    if let notAfter = schedule.notAfter { wire.notAfter = ProtoTime.timestamp(notAfter) }
    if let maxRuns = schedule.maxRuns { wire.maxRuns = UInt32(clamping: maxRuns) }
    if let jitter = schedule.jitter { wire.jitter = ProtoTime.duration(jitter) }
    switch schedule.misfire {
    case .runOnce: wire.misfire = .runOnce
    case .runAll(let limit):
      wire.misfire = .runAll
      wire.misfireLimit = UInt32(clamping: limit)
    case .skip: wire.misfire = .skip
    }
    wire.overlap = schedule.overlap == .allow ? .allow : .skip
    wire.dstGap = schedule.dstGap == .skip ? .skip : .runAfter
    wire.dstOverlap = schedule.dstOverlap == .both ? .both : .once
    return wire
  }

  static func schedule(_ wire: Hourglass_V1_ScheduleSpec, isRecurring: Bool) -> TaskSchedule? {
    let kind: TaskSchedule.Kind
    switch wire.kind {
    case .once(let once):
      switch once.at {
      case .instant(let instant): kind = .at(ProtoTime.date(instant))
      case .localDateTime(let text): kind = .atLocal(text)
      case nil: return nil
      }
    case .cron(let cron): kind = .cron(cron.expression)
    case .interval(let interval):
      kind = .every(ProtoTime.swiftDuration(interval.every), anchor: interval.hasAnchor ? ProtoTime.date(interval.anchor) : nil)
    case nil: return nil
    }
    let misfire: TaskSchedule.Misfire
    switch wire.misfire {
    case .runAll: misfire = .runAll(limit: Int(wire.misfireLimit))
    case .skip: misfire = .skip
    default: misfire = .runOnce
    }
    return TaskSchedule(
      kind: kind,
      timeZone: wire.timeZone.isEmpty ? "UTC" : wire.timeZone,
      isRecurring: isRecurring,
      notBefore: wire.hasNotBefore ? ProtoTime.date(wire.notBefore) : nil,
      notAfter: wire.hasNotAfter ? ProtoTime.date(wire.notAfter) : nil,
      maxRuns: wire.maxRuns == 0 ? nil : Int(wire.maxRuns),
      jitter: wire.hasJitter ? ProtoTime.swiftDuration(wire.jitter) : nil,
      misfire: misfire,
      overlap: wire.overlap == .allow ? .allow : .skip,
      dstGap: wire.dstGap == .skip ? .skip : .runAfter,
      dstOverlap: wire.dstOverlap == .both ? .both : .once
    )
  }

  static func retry(_ retry: RetrySettings) -> Hourglass_V1_RetryPolicy {
    var wire = Hourglass_V1_RetryPolicy()
    wire.maxAttempts = UInt32(clamping: retry.maxAttempts)
    wire.initialBackoff = ProtoTime.duration(retry.initialBackoff)
    wire.multiplier = retry.multiplier
    wire.maxBackoff = ProtoTime.duration(retry.maxBackoff)
    wire.jitter = retry.jitter
    return wire
  }

  static func taskStatus(_ wire: Hourglass_V1_TaskStatus) -> TaskStatus {
    switch wire {
    case .running: .running
    case .retrying: .retrying
    case .succeeded: .succeeded
    case .failed: .failed
    case .deleted: .deleted
    case .paused: .paused
    case .scheduled, .unspecified, .UNRECOGNIZED: .scheduled
    }
  }

  static func taskStatus(_ status: TaskStatus) -> Hourglass_V1_TaskStatus {
    switch status {
    case .scheduled: .scheduled
    case .running: .running
    case .retrying: .retrying
    case .succeeded: .succeeded
    case .failed: .failed
    case .deleted: .deleted
    case .paused: .paused
    }
  }

  static func runStatus(_ wire: Hourglass_V1_RunStatus) -> RunStatus? {
    switch wire {
    case .pending: .pending
    case .running: .running
    case .succeeded: .succeeded
    case .failed: .failed
    case .dead: .dead
    case .cancelled: .cancelled
    case .skipped: .skipped
    case .timedOut: .timedOut
    case .lost: .lost
    case .unspecified, .UNRECOGNIZED: nil
    }
  }

  static func task(_ info: Hourglass_V1_TaskInfo) -> TaskDetails {
    TaskDetails(
      taskID: info.taskID,
      status: taskStatus(info.taskStatus),
      lastExecuted: info.hasLastExecuted ? ProtoTime.date(info.lastExecuted) : nil,
      nextExecution: info.hasNextExecution ? ProtoTime.date(info.nextExecution) : nil,
      name: info.name,
      operatorName: info.operator,
      schedule: info.hasSchedule ? schedule(info.schedule, isRecurring: info.isRecurring) : nil,
      isRecurring: info.isRecurring,
      priority: Int(info.priority),
      lastRunStatus: runStatus(info.lastRunStatus),
      created: info.hasCreated ? ProtoTime.date(info.created) : nil,
      blobSHA256: info.blobSha256,
      runsCompleted: Int(info.runsCompleted),
      retry: info.hasRetry
        ? RetrySettings(
          maxAttempts: Int(info.retry.maxAttempts), initialBackoff: ProtoTime.swiftDuration(info.retry.initialBackoff),
          multiplier: info.retry.multiplier, maxBackoff: ProtoTime.swiftDuration(info.retry.maxBackoff), jitter: info.retry.jitter) : nil,
      timeout: info.hasTimeout ? ProtoTime.swiftDuration(info.timeout) : nil,
      arguments: info.arguments
    )
  }

  static func run(_ info: Hourglass_V1_RunInfo) -> RunDetails {
    RunDetails(
      runID: info.runID,
      taskID: info.taskID,
      scheduledAt: ProtoTime.date(info.scheduledAt),
      attempt: Int(info.attempt),
      status: runStatus(info.status) ?? .pending,
      started: info.hasStarted ? ProtoTime.date(info.started) : nil,
      finished: info.hasFinished ? ProtoTime.date(info.finished) : nil,
      exitCode: info.exitCode,
      error: info.error,
      outputTail: Array(info.outputTail),
      executor: info.executor
    )
  }
}
