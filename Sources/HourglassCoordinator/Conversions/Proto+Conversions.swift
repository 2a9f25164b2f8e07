import Foundation
import HourglassCore
import HourglassProto
import HourglassRPC
import HourglassStore
import SwiftProtobuf

extension ScheduleValidationError {
  /// The status a client sees: INVALID_ARGUMENT naming the field (as the request spells it) and
  /// the reason.
  var rpcError: RPCError { RPCError(code: .invalidArgument, message: "\(Self.wireField(field)): \(reason)") }

  /// The request's name for a field the schedule model names as its JSON and the CLI do
  /// (`every`, `max-runs`, `retry.max-attempts`, …); names already in the request's form pass.
  static func wireField(_ field: String) -> String {
    switch field {
    case "cron": return "schedule.cron.expression"
    case "every": return "schedule.interval.every"
    case "anchor": return "schedule.interval.anchor"
    case "at", "time": return "schedule.once"
    case "kind": return "schedule"
    case "time-zone": return "schedule.time_zone"
    case "start": return "schedule.not_before"
    case "end": return "schedule.not_after"
    case "max-runs": return "schedule.max_runs"
    case "jitter": return "schedule.jitter"
    case "misfire", "misfire.grace": return "schedule.misfire"
    case "misfire.limit": return "schedule.misfire_limit"
    case "retry.attempt-timeout": return "timeout"
    default:
      // retry.max-attempts → retry.max_attempts, and so on.
      return field.hasPrefix("retry.") ? field.replacingOccurrences(of: "-", with: "_") : field
    }
  }
}

/// The wire schedule → the domain's `ScheduleSpec`, validated; errors name the field.
enum ScheduleConversion {
  static func spec(from wire: Hourglass_V1_ScheduleSpec, isRecurring: Bool) throws(ScheduleValidationError) -> ScheduleSpec {
    let zone = wire.timeZone.isEmpty ? "UTC" : wire.timeZone
    let kind: ScheduleSpec.Kind
    switch wire.kind {
    case .once(let once):
      switch once.at {
      case .instant(let instant):
        kind = .once(.instant(try micros(instant, field: "schedule.once.instant")))
      case .localDateTime(let text):
        switch try RFC3339.parse(text, field: "schedule.once.local_date_time") {
        case .instant(let micros): kind = .once(.instant(micros))
        case .local(let local): kind = .once(.local(local))
        }
      case nil:
        throw ScheduleValidationError(field: "schedule.once", reason: "needs an instant or a local date-time")
      }
    case .cron(let cron):
      kind = .cron(cron.expression)
    case .interval(let interval):
      let every = try micros(interval.every, field: "schedule.interval.every")
      kind = .interval(every: every, anchor: interval.hasAnchor ? try micros(interval.anchor, field: "schedule.interval.anchor") : 0)
    case nil:
      throw ScheduleValidationError(field: "schedule", reason: "one of once, cron or interval is required")
    }
    // An enum value this server does not know is refused, not taken for the default.
    func unknown(_ field: String, _ raw: Int) -> ScheduleValidationError {
      ScheduleValidationError(field: field, reason: "unknown value \(raw)")
    }
    var misfire = MisfirePolicy.defaults
    switch wire.misfire {
    case .skip: misfire = .skip
    case .runAll: misfire = try MisfirePolicy.runAll(limit: wire.misfireLimit == 0 ? 100 : Int(wire.misfireLimit))
    case .runOnce, .unspecified: misfire = .runOnce
    case .UNRECOGNIZED(let raw): throw unknown("schedule.misfire", raw)
    }
    if case .UNRECOGNIZED(let raw) = wire.dstGap { throw unknown("schedule.dst_gap", raw) }
    if case .UNRECOGNIZED(let raw) = wire.dstOverlap { throw unknown("schedule.dst_overlap", raw) }
    if case .UNRECOGNIZED(let raw) = wire.overlap { throw unknown("schedule.overlap", raw) }
    let dst = DSTPolicy(
      gap: wire.dstGap == .skip ? .skip : .runAfter,
      overlap: wire.dstOverlap == .both ? .both : .once
    )
    var maxRuns: Int? = wire.maxRuns == 0 ? nil : Int(wire.maxRuns)
    if !isRecurring, case .once = kind {
      maxRuns = nil
    } else if !isRecurring {
      maxRuns = 1  // A cron or interval schedule that is not recurring fires its first time only.
    }
    let spec = ScheduleSpec(
      kind,
      timeZone: zone,
      start: wire.hasNotBefore ? try micros(wire.notBefore, field: "schedule.not_before") : nil,
      end: wire.hasNotAfter ? try micros(wire.notAfter, field: "schedule.not_after") : nil,
      maxRuns: maxRuns,
      jitter: wire.hasJitter ? try micros(wire.jitter, field: "schedule.jitter") : 0,
      dst: dst,
      misfire: misfire,
      overlap: wire.overlap == .allow ? .allow : .skip
    )
    try spec.validate()
    return spec
  }

  static func retry(from wire: Hourglass_V1_RetryPolicy?, timeoutMicros: Int64?) throws(ScheduleValidationError) -> RetryPolicy {
    let defaults = RetryPolicy.defaults
    guard let wire else {
      var policy = defaults
      policy.attemptTimeout = timeoutMicros
      return policy
    }
    return try RetryPolicy(
      maxAttempts: wire.maxAttempts == 0 ? defaults.maxAttempts : Int(wire.maxAttempts),
      initialBackoff: wire.hasInitialBackoff ? try micros(wire.initialBackoff, field: "retry.initial_backoff") : defaults.initialBackoff,
      multiplier: wire.multiplier == 0 ? defaults.multiplier : wire.multiplier,
      maxBackoff: wire.hasMaxBackoff ? try micros(wire.maxBackoff, field: "retry.max_backoff") : defaults.maxBackoff,
      jitter: wire.jitter,
      attemptTimeout: timeoutMicros
    )
  }

  /// A client's timestamp in microseconds, refused (naming `field`) unless it is a valid one:
  /// years 1–9999, nanos 0–999,999,999.
  static func micros(_ timestamp: Google_Protobuf_Timestamp, field: String) throws(ScheduleValidationError) -> Int64 {
    guard let micros = ProtoTime.checkedMicros(timestamp) else {
      throw ScheduleValidationError(field: field, reason: "not a valid timestamp (years 1-9999, nanos 0-999999999)")
    }
    return micros
  }

  /// A client's duration in microseconds, refused (naming `field`) unless it is a valid one:
  /// within ±10,000 years, nanos of the seconds' sign.
  static func micros(_ duration: Google_Protobuf_Duration, field: String) throws(ScheduleValidationError) -> Int64 {
    guard let micros = ProtoTime.checkedMicros(duration) else {
      throw ScheduleValidationError(field: field, reason: "not a valid duration (within ±10000 years, nanos of the seconds' sign)")
    }
    return micros
  }

  /// The domain spec back to the wire, for Get and List.
  static func wire(_ spec: ScheduleSpec) -> Hourglass_V1_ScheduleSpec {
    var wire = Hourglass_V1_ScheduleSpec()
    switch spec.kind {
    case .once(.instant(let micros)):
      var once = Hourglass_V1_OnceSchedule()
      once.instant = ProtoTime.timestamp(micros)
      wire.once = once
    case .once(.local(let local)):
      var once = Hourglass_V1_OnceSchedule()
      once.localDateTime = "\(local)"
      wire.once = once
    case .cron(let expression):
      var cron = Hourglass_V1_CronSchedule()
      cron.expression = expression
      wire.cron = cron
    case .interval(let every, let anchor):
      var interval = Hourglass_V1_IntervalSchedule()
      interval.every = ProtoTime.duration(every)
      interval.anchor = ProtoTime.timestamp(anchor)
      wire.interval = interval
    }
    wire.timeZone = spec.timeZone
    if let start = spec.start { wire.notBefore = ProtoTime.timestamp(start) }
    if let end = spec.end { wire.notAfter = ProtoTime.timestamp(end) }
    wire.maxRuns = UInt32(clamping: spec.maxRuns ?? 0)
    if spec.jitter > 0 { wire.jitter = ProtoTime.duration(spec.jitter) }
    wire.dstGap = spec.dst.gap == .skip ? .skip : .runAfter
    wire.dstOverlap = spec.dst.overlap == .both ? .both : .once
    switch spec.misfire.mode {
    case .runOnce: wire.misfire = .runOnce
    case .runAll:
      wire.misfire = .runAll
      wire.misfireLimit = UInt32(clamping: spec.misfire.limit)
    case .skip: wire.misfire = .skip
    }
    wire.overlap = spec.overlap == .allow ? .allow : .skip
    return wire
  }
}

/// Store records → what users see.
enum RecordConversion {
  static func taskStatus(_ record: TaskRecord) -> Hourglass_V1_TaskStatus {
    switch record.state {
    case .active:
      // A retry keeps the run (next_run = its scheduled time) and moves only its due time.
      if let due = record.dueMicros, let next = record.nextRunMicros, due != next { return .retrying }
      return .scheduled
    case .running: return .running
    case .paused: return .paused
    case .completed: return .succeeded
    case .dead: return .failed
    case .deleted: return .deleted
    }
  }

  static func runStatus(_ state: RunState) -> Hourglass_V1_RunStatus {
    switch state {
    case .pending: return .pending
    case .leased: return .running
    case .succeeded: return .succeeded
    case .failed: return .failed
    case .retrying: return .failed
    case .dead: return .dead
    case .cancelled: return .cancelled
    case .skipped: return .skipped
    }
  }

  static func taskInfo(_ record: TaskRecord) -> Hourglass_V1_TaskInfo {
    var info = Hourglass_V1_TaskInfo()
    info.taskID = record.id.description
    info.taskStatus = taskStatus(record)
    if let last = record.lastRunMicros { info.lastExecuted = ProtoTime.timestamp(last) }
    if let next = record.dueMicros ?? record.nextRunMicros, !record.state.isFinal {
      info.nextExecution = ProtoTime.timestamp(next)
    }
    info.name = record.name
    info.operator = record.operatorName
    info.isRecurring = record.recurring
    info.priority = record.priority
    if let last = record.lastRunState { info.lastRunStatus = runStatus(last) }
    info.runsCompleted = UInt32(clamping: record.runsCompleted)
    info.created = ProtoTime.timestamp(record.createdAtMicros)
    info.blobSha256 = record.blobDigest?.hex ?? ""
    info.arguments = record.arguments
    info.timeout = ProtoTime.duration(record.timeoutMicros)
    if let stored = try? StoredTaskSpec.decode(record.scheduleSpec) {
      info.schedule = ScheduleConversion.wire(stored.schedule)
      var retry = Hourglass_V1_RetryPolicy()
      retry.maxAttempts = UInt32(clamping: stored.retry.maxAttempts)
      retry.initialBackoff = ProtoTime.duration(stored.retry.initialBackoff)
      retry.multiplier = stored.retry.multiplier
      retry.maxBackoff = ProtoTime.duration(stored.retry.maxBackoff)
      retry.jitter = stored.retry.jitter
      info.retry = retry
    }
    return info
  }

  static func runInfo(_ record: RunRecord) -> Hourglass_V1_RunInfo {
    var info = Hourglass_V1_RunInfo()
    info.runID = record.id.description
    info.taskID = record.id.taskID.description
    info.scheduledAt = ProtoTime.timestamp(record.id.scheduledMicros)
    info.attempt = UInt32(clamping: record.attempt)
    info.status = runStatus(record.state)
    if let started = record.startedMicros { info.started = ProtoTime.timestamp(started) }
    if let finished = record.finishedMicros { info.finished = ProtoTime.timestamp(finished) }
    info.exitCode = record.exitStatus ?? 0
    info.error = record.error ?? ""
    info.outputTail = Data(record.outputTail)
    info.executor = record.leaseOwner ?? ""
    return info
  }
}
