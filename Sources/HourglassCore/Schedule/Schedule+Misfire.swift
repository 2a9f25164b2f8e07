/// What to do now with the runs that came due since the last one the scheduler handled.
public struct MisfireDecision: Sendable, Hashable {
  /// Scheduled times (UTC µs) of the runs to start now, oldest first. Each is the run's identity
  /// (run id = task id + scheduled time).
  public var runsToStart: [Int64]
  /// How many due runs were not started (counted in the skipped-runs metric).
  public var skipped: Int
  /// Whether ``skipped`` is exact; `false` when more than ``Schedule/misfireCountLimit`` runs were
  /// due, in which case it is a lower bound.
  public var skippedIsExact: Bool
  /// The next fire time strictly after `now`, or `nil` if the schedule has ended.
  public var nextFireTime: Int64?

  /// Creates a decision.
  public init(runsToStart: [Int64], skipped: Int, skippedIsExact: Bool, nextFireTime: Int64?) {
    self.runsToStart = runsToStart
    self.skipped = skipped
    self.skippedIsExact = skippedIsExact
    self.nextFireTime = nextFireTime
  }
}

extension Schedule {
  /// The most due runs counted one by one in a misfire decision; beyond it the skipped count is a
  /// lower bound (interval schedules are counted exactly by arithmetic, without this limit).
  public static let misfireCountLimit = 100_000

  /// Applies the spec's ``MisfirePolicy`` to the runs due in `(after, now]`.
  ///
  /// `after` is the scheduled time of the last run the scheduler dealt with (started or skipped),
  /// or the task's creation time if none; `now` is the current time; `runsSoFar` how many runs have
  /// been started (for ``ScheduleSpec/maxRuns``). A single run that is due and within the grace
  /// period is simply started under every policy. The coordinator records the runs it starts,
  /// adds `skipped` to its metric, and sleeps until ``MisfireDecision/nextFireTime``.
  public func misfire(after: Int64, now: Int64, runsSoFar: Int = 0) -> MisfireDecision {
    let policy = spec.misfire
    let now = min(now, Schedule.latest)
    let next = nextFireTime(after: now, runsSoFar: runsSoFar)
    // How many runs may still start at all.
    let remaining = spec.maxRuns.map { max(0, $0 - runsSoFar) } ?? Int.max
    let keep: Int
    switch policy.mode {
    case .runOnce, .skip: keep = 1
    case .runAll: keep = policy.limit
    }
    // Collect the due times, keeping only the last `keep` of them.
    var recent: [Int64] = []
    var due = 0
    var exact = true
    if case .interval(let every, let anchor) = compiled, spec.start == nil, spec.end == nil,
      spec.maxRuns == nil
    {
      // Count arithmetically: fire times are anchor + jitter + k × every.
      let base = anchor + jitterOffset
      func index(atOrBefore t: Int64) -> Int64 { t < base ? -1 : (t - base) / every }
      let firstIndex = index(atOrBefore: after) + 1
      let lastIndex = index(atOrBefore: now)
      if lastIndex >= firstIndex {
        due = Int(clamping: lastIndex - firstIndex + 1)
        let from = max(firstIndex, lastIndex - Int64(keep) + 1)
        for k in from...lastIndex { recent.append(base + k * every) }
      }
    } else {
      var cursor = after
      while let t = nextFireTime(after: cursor, runsSoFar: runsSoFar), t <= now {
        due += 1
        if recent.count == keep { recent.removeFirst() }
        recent.append(t)
        cursor = t
        if due >= Schedule.misfireCountLimit {
          if let more = nextFireTime(after: cursor, runsSoFar: runsSoFar), more <= now {
            exact = false
            // Jump to the most recent due times, so the runs started are still the latest ones.
            recent = latestDue(before: now, keep: keep, runsSoFar: runsSoFar, notBefore: cursor)
          }
          break
        }
      }
    }
    if due == 0 {
      return MisfireDecision(runsToStart: [], skipped: 0, skippedIsExact: true, nextFireTime: next)
    }
    var start: [Int64]
    switch policy.mode {
    case .runOnce, .runAll:
      start = recent
    case .skip:
      start = recent.filter { now - $0 <= policy.grace }
    }
    if start.count > remaining { start = Array(start.suffix(remaining)) }
    return MisfireDecision(
      runsToStart: start, skipped: max(0, due - start.count), skippedIsExact: exact,
      nextFireTime: start.count >= remaining ? nil : next)
  }

  /// The last `keep` fire times at or before `now`, searching back from `now` in widening windows.
  private func latestDue(before now: Int64, keep: Int, runsSoFar: Int, notBefore: Int64) -> [Int64] {
    var window: Int64 = 60_000_000
    while true {
      let from = max(notBefore, now - window)
      var times: [Int64] = []
      var cursor = from
      while let t = nextFireTime(after: cursor, runsSoFar: runsSoFar), t <= now {
        if times.count == keep { times.removeFirst() }
        times.append(t)
        cursor = t
      }
      if times.count >= keep || from == notBefore { return times }
      window *= 4
    }
  }
}
