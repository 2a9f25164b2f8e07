import Foundation

/// A validated, compiled schedule: computes when a task fires.
///
/// Build one from a ``ScheduleSpec`` (the stored form) and the task's jitter seed; building parses
/// the cron expression, loads the zone's transition table (cached per process) and checks every
/// field. After that, ``nextFireTime(after:runsSoFar:)`` is pure integer arithmetic: it does not
/// allocate and does not touch `Calendar`.
///
/// All instants are UTC microseconds since the Unix epoch (`Int64`), the unit the coordinator
/// stores. Cron and one-shot fire times fall on whole seconds (plus the jitter offset).
public struct Schedule: Sendable {
  /// The spec this schedule was built from.
  public let spec: ScheduleSpec
  /// The zone's rules (UTC for intervals and instants unless a zone was given for display).
  public let zone: ZoneRules
  /// The per-task delay added to every fire time, in microseconds, in `[0, spec.jitter)`.
  public let jitterOffset: Int64

  enum Compiled: Sendable {
    case once([Int64])  // 1 or 2 instants (µs), ascending
    case cron(CronExpression)
    case interval(every: Int64, anchor: Int64)
  }

  let compiled: Compiled

  /// The earliest and latest instants a schedule may fire at: years 1970 to 9999.
  static let earliest: Int64 = 0
  static let latest: Int64 = 253_402_300_799_000_000  // 9999-12-31T23:59:59Z

  /// Builds a schedule, validating `spec`; `jitterSeed` picks the jitter offset (use
  /// ``StableHash`` of the task id, or the `taskID:` initialiser).
  public init(_ spec: ScheduleSpec, jitterSeed: UInt64 = 0) throws(ScheduleValidationError) {
    self.spec = spec
    zone = try ZoneRules.named(spec.timeZone)
    if let start = spec.start, !(Schedule.earliest...Schedule.latest).contains(start) {
      throw ScheduleValidationError(field: "start", reason: "must be between 1970 and 9999")
    }
    if let end = spec.end, !(Schedule.earliest...Schedule.latest).contains(end) {
      throw ScheduleValidationError(field: "end", reason: "must be between 1970 and 9999")
    }
    if let start = spec.start, let end = spec.end, end <= start {
      throw ScheduleValidationError(
        field: "end",
        reason:
          "\(RFC3339.formatUTC(micros: end)) is not after start \(RFC3339.formatUTC(micros: start))"
      )
    }
    if let maxRuns = spec.maxRuns, maxRuns < 1 {
      throw ScheduleValidationError(field: "max-runs", reason: "\(maxRuns) must be at least 1")
    }
    guard spec.jitter >= 0, spec.jitter <= 86_400_000_000 else {
      throw ScheduleValidationError(
        field: "jitter", reason: "\(DurationText.format(spec.jitter)) out of range 0s-1d")
    }
    try spec.misfire.validate()
    switch spec.kind {
    case .cron(let text):
      compiled = .cron(try CronExpression(text))
    case .interval(let every, let anchor):
      guard every >= 1_000_000 else {
        throw ScheduleValidationError(
          field: "every", reason: "\(DurationText.format(every)) is shorter than 1s")
      }
      guard every <= 100 * 365 * 86_400_000_000 else {
        throw ScheduleValidationError(field: "every", reason: "longer than 100 years")
      }
      guard (Schedule.earliest...Schedule.latest).contains(anchor) else {
        throw ScheduleValidationError(field: "anchor", reason: "must be between 1970 and 9999")
      }
      compiled = .interval(every: every, anchor: anchor)
    case .once(let time):
      if spec.jitter != 0 {
        throw ScheduleValidationError(
          field: "jitter", reason: "only recurring schedules (cron, interval) may have jitter")
      }
      let instants: [Int64]
      switch time {
      case .instant(let micros):
        instants = [micros]
      case .local(let local):
        switch zone.resolve(local: local.civilSeconds) {
        case .unique(let seconds):
          instants = [seconds * 1_000_000]
        case .gap(let transition):
          if spec.dst.gap == .skip {
            throw ScheduleValidationError(
              field: "at",
              reason:
                "\(local) does not exist in \(spec.timeZone) (skipped by a DST transition) and dst.gap is skip"
            )
          }
          // A gap with no transition after it cannot occur; if a zone's rules ever said so, the
          // run falls on no instant rather than overflow.
          instants = transition < Int64.max / 1_000_000 ? [transition * 1_000_000] : []
        case .overlap(let first, let second):
          instants =
            spec.dst.overlap == .both
            ? [first * 1_000_000, second * 1_000_000] : [first * 1_000_000]
        }
      }
      guard instants.allSatisfy({ (Schedule.earliest...Schedule.latest).contains($0) }) else {
        throw ScheduleValidationError(field: "at", reason: "must be between 1970 and 9999")
      }
      if let start = spec.start, instants.last! < start {
        throw ScheduleValidationError(
          field: "at", reason: "\(RFC3339.formatUTC(micros: instants.last!)) is before start")
      }
      if let end = spec.end, instants.first! >= end {
        throw ScheduleValidationError(
          field: "at", reason: "\(RFC3339.formatUTC(micros: instants.first!)) is not before end")
      }
      compiled = .once(instants)
    }
    jitterOffset = spec.isRecurring ? Jitter.offset(maximum: spec.jitter, seed: jitterSeed) : 0
  }

  /// Builds a schedule whose jitter is seeded by the stable hash of `taskID`'s UTF-8 bytes.
  public init(_ spec: ScheduleSpec, taskID: String) throws(ScheduleValidationError) {
    try self.init(spec, jitterSeed: StableHash.hash(taskID))
  }

  /// The first fire time strictly after `after` (UTC microseconds), or `nil` if the schedule has
  /// ended: past its end, past its last one-shot time, or `runsSoFar` has reached `maxRuns`.
  ///
  /// `runsSoFar` is how many runs of the task have been started; only ``ScheduleSpec/maxRuns``
  /// looks at it. Exact, allocation-free, and fast (see `docs/benchmarks.md`).
  @inlinable
  public func nextFireTime(after: Int64, runsSoFar: Int = 0) -> Int64? {
    nextFireTimeImpl(after: after, runsSoFar: runsSoFar)
  }

  @usableFromInline
  func nextFireTimeImpl(after: Int64, runsSoFar: Int) -> Int64? {
    if let maxRuns = spec.maxRuns, runsSoFar >= maxRuns { return nil }
    // Nothing fires before 1970, so earlier questions are the same question (and this keeps the
    // arithmetic below far from overflow for any input).
    var from = max(after, Schedule.earliest - 1)
    if let start = spec.start, from < start - 1 { from = start - 1 }
    if from >= Schedule.latest { return nil }
    guard let nominal = nominalNext(after: from - jitterOffset) else { return nil }
    let fire = nominal + jitterOffset
    if let end = spec.end, fire >= end { return nil }
    return fire
  }

  /// The next `count` fire times after `after`, ascending (fewer if the schedule ends).
  public func fireTimes(after: Int64, count: Int, runsSoFar: Int = 0) -> [Int64] {
    var result: [Int64] = []
    result.reserveCapacity(max(0, min(count, 10_000)))
    var cursor = after
    var runs = runsSoFar
    while result.count < count, let next = nextFireTime(after: cursor, runsSoFar: runs) {
      result.append(next)
      cursor = next
      runs += 1
    }
    return result
  }

  /// ``nextFireTime(after:runsSoFar:)`` for `Date`s.
  public func nextFireDate(after date: Date, runsSoFar: Int = 0) -> Date? {
    nextFireTime(after: date.unixMicros, runsSoFar: runsSoFar).map(Date.init(unixMicros:))
  }

  /// Formats an instant in this schedule's zone, e.g. `2026-03-08T03:00:00-04:00`.
  public func format(_ micros: Int64) -> String {
    RFC3339.format(micros: micros, offsetSeconds: zone.offset(atMicros: micros))
  }

  /// The first nominal (un-jittered) fire time strictly after `after`.
  @inline(__always)
  func nominalNext(after: Int64) -> Int64? {
    switch compiled {
    case .cron(let cron):
      return Schedule.cronNext(cron, zone: zone, dst: spec.dst, after: after)
    case .interval(let every, let anchor):
      if after < anchor { return anchor }
      let k = (after - anchor) / every + 1
      let (product, overflow) = k.multipliedReportingOverflow(by: every)
      if overflow { return nil }
      let next = anchor + product
      return next <= Schedule.latest ? next : nil
    case .once(let instants):
      for instant in instants where instant > after { return instant }
      return nil
    }
  }

  /// The first instant strictly after `after` (µs) at which `cron` fires in `zone`, applying `dst`.
  ///
  /// Walks the zone's constant-offset segments forward from `after`. In each segment it asks the
  /// cron expression for the first matching wall time; a match inside the segment is the answer
  /// (unless it is the second occurrence of a repeated wall time and the overlap policy is
  /// `once`); a match that lands in the wall-clock gap at the segment's end fires at the
  /// transition under `run-after`; otherwise the walk moves on to the next segment.
  static func cronNext(
    _ cron: CronExpression, zone: ZoneRules, dst: DSTPolicy, after: Int64
  )
    -> Int64?
  {
    var s = CivilTime.floorDiv(after, 1_000_000) + 1  // first whole second strictly after
    var guardCount = 0
    while guardCount < 100_000 {
      guardCount += 1
      let seg = zone.segment(containing: s)
      guard let wall = cron.nextMatch(atOrAfter: s + seg.offset, lastYear: 9999) else { return nil }
      let endWall = seg.end == Int64.max ? Int64.max : seg.end + seg.offset
      if wall < endWall {
        // Inside this segment. A repeated wall time (just after a backward transition)?
        if seg.previousOffset > seg.offset && wall < seg.start + seg.previousOffset
          && dst.overlap == .once
        {
          // Resume at the first second after the repeated stretch.
          s = seg.start + seg.previousOffset - seg.offset
          continue
        }
        return (wall - seg.offset) * 1_000_000
      }
      // Past this segment's wall clock. In the gap of a forward transition?
      if seg.nextOffset > seg.offset && wall < seg.end + seg.nextOffset && dst.gap == .runAfter {
        return seg.end * 1_000_000
      }
      s = seg.end
    }
    return nil
  }
}
