import Testing

@testable import HourglassCore

@Suite("Misfire, overlap and retry policies")
struct MisfireTests {
  static func schedule(
    _ cron: String, _ misfire: MisfirePolicy, maxRuns: Int? = nil
  ) throws
    -> Schedule
  {
    var spec = cronSpec(cron)
    spec.misfire = misfire
    spec.maxRuns = maxRuns
    return try Schedule(spec)
  }

  static let last = 1_767_225_600_000_000 as Int64  // 2026-01-01T00:00:00Z, the last handled run
  static let minute = 60_000_000 as Int64

  @Test("nothing due: nothing to start, next time given")
  func nothingDue() throws {
    let s = try Self.schedule("*/10 * * * *", .runOnce)
    let d = s.misfire(after: Self.last, now: Self.last + 5 * Self.minute)
    #expect(d.runsToStart.isEmpty && d.skipped == 0)
    #expect(d.nextFireTime == Self.last + 10 * Self.minute)
  }

  @Test("one run due and on time starts under every policy", arguments: MisfirePolicy.Mode.allCases)
  func onTime(mode: MisfirePolicy.Mode) throws {
    let s = try Self.schedule("*/10 * * * *", try MisfirePolicy(mode))
    let d = s.misfire(after: Self.last, now: Self.last + 10 * Self.minute + 2_000_000)
    #expect(d.runsToStart == [Self.last + 10 * Self.minute])
    #expect(d.skipped == 0)
    #expect(d.nextFireTime == Self.last + 20 * Self.minute)
  }

  @Test("run-once: one catch-up run for the latest missed time, the rest skipped")
  func runOnce() throws {
    let s = try Self.schedule("*/10 * * * *", .runOnce)
    // Down for 3 hours and 5 minutes: 18 runs came due.
    let now = Self.last + 185 * Self.minute
    let d = s.misfire(after: Self.last, now: now)
    #expect(d.runsToStart == [Self.last + 180 * Self.minute])
    #expect(d.skipped == 17)
    #expect(d.skippedIsExact)
    #expect(d.nextFireTime == Self.last + 190 * Self.minute)
  }

  @Test("run-all: the most recent runs up to the limit, oldest first")
  func runAll() throws {
    let s = try Self.schedule("*/10 * * * *", try .runAll(limit: 5))
    let d = s.misfire(after: Self.last, now: Self.last + 185 * Self.minute)
    #expect(d.runsToStart == (14...18).map { Self.last + Int64($0) * 10 * Self.minute })
    #expect(d.skipped == 13)
    let few = s.misfire(after: Self.last, now: Self.last + 35 * Self.minute)
    #expect(few.runsToStart == [10, 20, 30].map { Self.last + $0 * Self.minute })
    #expect(few.skipped == 0)
  }

  @Test("skip: nothing older than the grace period starts")
  func skip() throws {
    let s = try Self.schedule("*/10 * * * *", .skip)
    let late = s.misfire(after: Self.last, now: Self.last + 185 * Self.minute)
    #expect(late.runsToStart.isEmpty)
    #expect(late.skipped == 18)
    #expect(late.nextFireTime == Self.last + 190 * Self.minute)
    // Still within the grace period of the latest run: it starts, the older ones are skipped.
    let graceful = s.misfire(after: Self.last, now: Self.last + 180 * Self.minute + 30_000_000)
    #expect(graceful.runsToStart == [Self.last + 180 * Self.minute])
    #expect(graceful.skipped == 17)
  }

  @Test("interval schedules count skipped runs exactly, however many")
  func intervalCount() throws {
    var spec = ScheduleSpec.interval(every: 1_000_000, anchor: Self.last)
    spec.misfire = .runOnce
    let s = try Schedule(spec)
    let now = Self.last + 30 * 86_400_000_000  // a month of every-second runs
    let d = s.misfire(after: Self.last, now: now)
    #expect(d.runsToStart == [now])
    #expect(d.skipped == 30 * 86_400 - 1)
    #expect(d.skippedIsExact)
  }

  @Test("very many missed cron runs: the count is a lower bound, the run is still the latest")
  func manyCron() throws {
    let s = try Self.schedule("* * * * * *", .runOnce)
    let now = Self.last + 3 * 86_400_000_000
    let d = s.misfire(after: Self.last, now: now)
    #expect(d.runsToStart == [now])
    #expect(!d.skippedIsExact)
    #expect(d.skipped >= Schedule.misfireCountLimit - 1)
  }

  @Test("max runs caps catch-up runs and ends the schedule")
  func maxRunsCap() throws {
    let s = try Self.schedule("*/10 * * * *", try .runAll(limit: 10), maxRuns: 4)
    let d = s.misfire(after: Self.last, now: Self.last + 65 * Self.minute, runsSoFar: 2)
    #expect(d.runsToStart == [50, 60].map { Self.last + $0 * Self.minute })
    #expect(d.nextFireTime == nil)
  }

  @Test(
    "overlap policy",
    arguments: [
      (OverlapPolicy.skip, false, true), (.skip, true, false), (.allow, true, true),
      (.allow, false, true),
    ])
  func overlap(policy: OverlapPolicy, inProgress: Bool, starts: Bool) {
    #expect(policy.shouldStart(previousRunInProgress: inProgress) == starts)
  }

  // MARK: retry

  @Test("retry backoff grows by the multiplier up to the cap, and stops after max attempts")
  func backoff() throws {
    let p = try RetryPolicy(
      maxAttempts: 6, initialBackoff: 1_000_000, multiplier: 2, maxBackoff: 10_000_000, jitter: 0)
    let delays = (1...6).map { p.backoff(afterAttempt: $0, seed: 1) }
    #expect(delays == [1_000_000, 2_000_000, 4_000_000, 8_000_000, 10_000_000, nil])
    #expect(p.backoff(afterAttempt: 0, seed: 1) == nil)
  }

  @Test(
    "retry jitter is deterministic per seed, never exceeds the un-jittered delay, and varies by seed"
  )
  func backoffJitter() throws {
    let p = try RetryPolicy(
      maxAttempts: 10, initialBackoff: 1_000_000, multiplier: 2, maxBackoff: 60_000_000, jitter: 0.5
    )
    var distinct = Set<Int64>()
    for seed in 0..<100 as Range<UInt64> {
      for attempt in 1..<10 {
        let a = try #require(p.backoff(afterAttempt: attempt, seed: seed))
        #expect(a == p.backoff(afterAttempt: attempt, seed: seed))
        let full = min(60_000_000, 1_000_000 << Int64(attempt - 1))
        #expect(a <= full && a >= full / 2)
        if attempt == 3 { distinct.insert(a) }
      }
    }
    #expect(distinct.count > 90)
  }

  @Test(
    "retry validation names the field",
    arguments: [
      ("max-attempts", "retry.max-attempts: 0 out of range 1-100"),
      ("multiplier", "retry.multiplier: 0.5 out of range 1-10"),
      ("max-backoff", "retry.max-backoff: 1s is less than initial-backoff 10s"),
      ("jitter", "retry.jitter: 1.5 out of range 0-1"),
      ("attempt-timeout", "retry.attempt-timeout: must be positive"),
    ])
  func retryValidation(field: String, message: String) {
    do {
      switch field {
      case "max-attempts": _ = try RetryPolicy(maxAttempts: 0)
      case "multiplier": _ = try RetryPolicy(multiplier: 0.5)
      case "max-backoff": _ = try RetryPolicy(initialBackoff: 10_000_000, maxBackoff: 1_000_000)
      case "jitter": _ = try RetryPolicy(jitter: 1.5)
      default: _ = try RetryPolicy(attemptTimeout: 0)
      }
      Issue.record("expected \(message)")
    } catch {
      #expect(error.description == message)
    }
  }

  @Test("priority range")
  func priority() throws {
    #expect(try Priority(100) > Priority(-100))
    #expect(Priority.defaults.value == 0)
    #expect(throws: ScheduleValidationError(field: "priority", reason: "101 out of range -100-100")) { try Priority(101) }
  }
}
