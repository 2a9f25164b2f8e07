import Testing

@testable import HourglassCore

/// DST and offset-change cases, worked out by hand from the zones' published rules.
///
/// Each case: zone, cron, the instant to search after, the DST policy, and the expected fire
/// times written in the zone's local time with its offset.
struct DSTCase: CustomTestStringConvertible, Sendable {
  var zone: String
  var cron: String
  var after: String
  var gap: DSTPolicy.Gap = .runAfter
  var overlap: DSTPolicy.Overlap = .once
  var expected: [String]
  var testDescription: String {
    "\(zone) '\(cron)' after \(after) gap=\(gap.rawValue) overlap=\(overlap.rawValue)"
  }
}

@Suite("Cron across DST and offset changes")
struct CronDSTTests {
  static let newYorkCases: [DSTCase] = [
    // 2026-03-08: 02:00 EST jumps to 03:00 EDT. 02:30 does not exist.
    DSTCase(
      zone: "America/New_York", cron: "30 2 * * *", after: "2026-03-07T12:00:00Z",
      expected: ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]),
    DSTCase(
      zone: "America/New_York", cron: "30 2 * * *", after: "2026-03-07T12:00:00Z", gap: .skip,
      expected: ["2026-03-09T02:30:00-04:00", "2026-03-10T02:30:00-04:00"]),
    // Several wanted times in the gap collapse into one run at 03:00, which also matches itself.
    DSTCase(
      zone: "America/New_York", cron: "*/30 * * * *", after: "2026-03-08T01:00:00-05:00",
      expected: [
        "2026-03-08T01:30:00-05:00", "2026-03-08T03:00:00-04:00", "2026-03-08T03:30:00-04:00",
      ]),
    DSTCase(
      zone: "America/New_York", cron: "*/30 * * * *", after: "2026-03-08T01:00:00-05:00",
      gap: .skip,
      expected: [
        "2026-03-08T01:30:00-05:00", "2026-03-08T03:00:00-04:00", "2026-03-08T03:30:00-04:00",
      ]),
    DSTCase(
      zone: "America/New_York", cron: "15,45 2 * * *", after: "2026-03-08T00:00:00-05:00",
      expected: [
        "2026-03-08T03:00:00-04:00", "2026-03-09T02:15:00-04:00", "2026-03-09T02:45:00-04:00",
      ]),
    // 2026-11-01: 02:00 EDT falls back to 01:00 EST. 01:30 happens twice.
    DSTCase(
      zone: "America/New_York", cron: "30 1 * * *", after: "2026-10-31T12:00:00Z",
      expected: ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]),
    DSTCase(
      zone: "America/New_York", cron: "30 1 * * *", after: "2026-10-31T12:00:00Z", overlap: .both,
      expected: [
        "2026-11-01T01:30:00-04:00", "2026-11-01T01:30:00-05:00", "2026-11-02T01:30:00-05:00",
      ]),
    DSTCase(
      zone: "America/New_York", cron: "*/20 1 * * *", after: "2026-11-01T00:50:00-04:00",
      expected: [
        "2026-11-01T01:00:00-04:00", "2026-11-01T01:20:00-04:00", "2026-11-01T01:40:00-04:00",
        "2026-11-02T01:00:00-05:00",
      ]),
    DSTCase(
      zone: "America/New_York", cron: "*/20 1 * * *", after: "2026-11-01T00:50:00-04:00",
      overlap: .both,
      expected: [
        "2026-11-01T01:00:00-04:00", "2026-11-01T01:20:00-04:00", "2026-11-01T01:40:00-04:00",
        "2026-11-01T01:00:00-05:00", "2026-11-01T01:20:00-05:00", "2026-11-01T01:40:00-05:00",
      ]),
    // Searching from inside the second 01:xx hour.
    DSTCase(
      zone: "America/New_York", cron: "45 1 * * *", after: "2026-11-01T01:10:00-05:00",
      overlap: .both,
      expected: ["2026-11-01T01:45:00-05:00"]),
    DSTCase(
      zone: "America/New_York", cron: "45 1 * * *", after: "2026-11-01T01:10:00-05:00",
      expected: ["2026-11-02T01:45:00-05:00"]),
    // Searching from inside the first 01:xx hour, for a time already passed in it.
    DSTCase(
      zone: "America/New_York", cron: "15 1 * * *", after: "2026-11-01T01:30:00-04:00",
      overlap: .both,
      expected: ["2026-11-01T01:15:00-05:00"]),
    DSTCase(
      zone: "America/New_York", cron: "15 1 * * *", after: "2026-11-01T01:30:00-04:00",
      expected: ["2026-11-02T01:15:00-05:00"]),
    // Every-5-minutes keeps a steady 5-minute rhythm of real time through the fall-back hour when
    // only the first occurrence runs: 01:55 EDT, then (01:00–01:55 EST skipped) 02:00 EST.
    DSTCase(
      zone: "America/New_York", cron: "*/5 * * * *", after: "2026-11-01T01:50:00-04:00",
      expected: ["2026-11-01T01:55:00-04:00", "2026-11-01T02:00:00-05:00"]),
    DSTCase(
      zone: "America/New_York", cron: "*/30 * * * *", after: "2026-11-01T01:20:00-04:00",
      overlap: .both,
      expected: [
        "2026-11-01T01:30:00-04:00", "2026-11-01T01:00:00-05:00", "2026-11-01T01:30:00-05:00",
        "2026-11-01T02:00:00-05:00",
      ]),
  ]

  static let londonCases: [DSTCase] = [
    // 2026-03-29: 01:00 GMT jumps to 02:00 BST.
    DSTCase(
      zone: "Europe/London", cron: "30 1 * * *", after: "2026-03-28T12:00:00Z",
      expected: ["2026-03-29T02:00:00+01:00", "2026-03-30T01:30:00+01:00"]),
    DSTCase(
      zone: "Europe/London", cron: "30 1 * * *", after: "2026-03-28T12:00:00Z", gap: .skip,
      expected: ["2026-03-30T01:30:00+01:00"]),
    // 2026-10-25: 02:00 BST falls back to 01:00 GMT.
    DSTCase(
      zone: "Europe/London", cron: "30 1 * * *", after: "2026-10-24T12:00:00Z",
      expected: ["2026-10-25T01:30:00+01:00", "2026-10-26T01:30:00+00:00"]),
    DSTCase(
      zone: "Europe/London", cron: "30 1 * * *", after: "2026-10-24T12:00:00Z", overlap: .both,
      expected: [
        "2026-10-25T01:30:00+01:00", "2026-10-25T01:30:00+00:00", "2026-10-26T01:30:00+00:00",
      ]),
    DSTCase(
      zone: "Europe/London", cron: "0 9 * * 1-5", after: "2026-03-27T00:00:00Z",
      expected: ["2026-03-27T09:00:00+00:00", "2026-03-30T09:00:00+01:00"]),
  ]

  static let lordHoweCases: [DSTCase] = [
    // A 30-minute shift. 2026-10-04: 02:00 (+10:30) jumps to 02:30 (+11:00).
    DSTCase(
      zone: "Australia/Lord_Howe", cron: "15 2 * * *", after: "2026-10-03T00:00:00Z",
      expected: ["2026-10-04T02:30:00+11:00", "2026-10-05T02:15:00+11:00"]),
    DSTCase(
      zone: "Australia/Lord_Howe", cron: "15 2 * * *", after: "2026-10-03T00:00:00Z", gap: .skip,
      expected: ["2026-10-05T02:15:00+11:00"]),
    DSTCase(
      zone: "Australia/Lord_Howe", cron: "45 2 * * *", after: "2026-10-03T00:00:00Z",
      expected: ["2026-10-04T02:45:00+11:00"]),
    // 2026-04-05: 02:00 (+11:00) falls back to 01:30 (+10:30); 01:30–01:59 happens twice.
    DSTCase(
      zone: "Australia/Lord_Howe", cron: "45 1 * * *", after: "2026-04-04T00:00:00Z",
      expected: ["2026-04-05T01:45:00+11:00", "2026-04-06T01:45:00+10:30"]),
    DSTCase(
      zone: "Australia/Lord_Howe", cron: "45 1 * * *", after: "2026-04-04T00:00:00Z",
      overlap: .both,
      expected: [
        "2026-04-05T01:45:00+11:00", "2026-04-05T01:45:00+10:30", "2026-04-06T01:45:00+10:30",
      ]),
    // 01:15 is before the repeated half hour: it happens once.
    DSTCase(
      zone: "Australia/Lord_Howe", cron: "15 1 * * *", after: "2026-04-04T00:00:00Z",
      overlap: .both,
      expected: ["2026-04-05T01:15:00+11:00", "2026-04-06T01:15:00+10:30"]),
  ]

  static let kathmanduCases: [DSTCase] = [
    // +05:45, no DST.
    DSTCase(
      zone: "Asia/Kathmandu", cron: "0 9 * * *", after: "2026-06-01T00:00:00Z",
      expected: ["2026-06-01T09:00:00+05:45", "2026-06-02T09:00:00+05:45"]),
    DSTCase(
      zone: "Asia/Kathmandu", cron: "*/30 * * * *", after: "2026-06-01T00:00:00Z",
      expected: ["2026-06-01T06:00:00+05:45", "2026-06-01T06:30:00+05:45"]),
    // 1986-01-01: +05:30 became +05:45 at midnight; 00:00–00:14 never happened that day.
    DSTCase(
      zone: "Asia/Kathmandu", cron: "5 0 * * *", after: "1985-12-30T00:00:00Z",
      expected: [
        "1985-12-31T00:05:00+05:30", "1986-01-01T00:15:00+05:45", "1986-01-02T00:05:00+05:45",
      ]),
    DSTCase(
      zone: "Asia/Kathmandu", cron: "5 0 * * *", after: "1985-12-30T00:00:00Z", gap: .skip,
      expected: ["1985-12-31T00:05:00+05:30", "1986-01-02T00:05:00+05:45"]),
  ]

  static let apiaCases: [DSTCase] = [
    // Samoa moved across the date line: 2011-12-29 (-10:00) was followed by 2011-12-31 (+14:00).
    DSTCase(
      zone: "Pacific/Apia", cron: "0 12 * * *", after: "2011-12-28T12:00:00Z",
      expected: [
        "2011-12-28T12:00:00-10:00", "2011-12-29T12:00:00-10:00", "2011-12-31T00:00:00+14:00",
        "2011-12-31T12:00:00+14:00",
      ]),
    DSTCase(
      zone: "Pacific/Apia", cron: "0 12 * * *", after: "2011-12-28T12:00:00Z", gap: .skip,
      expected: [
        "2011-12-28T12:00:00-10:00", "2011-12-29T12:00:00-10:00", "2011-12-31T12:00:00+14:00",
      ]),
    DSTCase(
      zone: "Pacific/Apia", cron: "0 0 30 12 *", after: "2011-06-01T00:00:00Z",
      expected: ["2011-12-31T00:00:00+14:00", "2012-12-30T00:00:00+14:00"]),
    DSTCase(
      zone: "Pacific/Apia", cron: "0 0 30 12 *", after: "2011-06-01T00:00:00Z", gap: .skip,
      expected: ["2012-12-30T00:00:00+14:00", "2013-12-30T00:00:00+14:00"]),
    // Friday the 30th is gone.
    DSTCase(
      zone: "Pacific/Apia", cron: "0 9 * * 5", after: "2011-12-25T00:00:00Z",
      expected: ["2011-12-31T00:00:00+14:00", "2012-01-06T09:00:00+14:00"]),
  ]

  static func check(_ c: DSTCase) throws {
    let got = try fires(
      cronSpec(c.cron, c.zone, gap: c.gap, overlap: c.overlap), after: c.after,
      count: c.expected.count)
    #expect(got == c.expected)
  }

  @Test("America/New_York", arguments: newYorkCases) func newYork(_ c: DSTCase) throws {
    try Self.check(c)
  }
  @Test("Europe/London", arguments: londonCases) func london(_ c: DSTCase) throws {
    try Self.check(c)
  }
  @Test("Australia/Lord_Howe (30-minute shift)", arguments: lordHoweCases) func lordHowe(
    _ c: DSTCase
  ) throws { try Self.check(c) }
  @Test("Asia/Kathmandu (+05:45)", arguments: kathmanduCases) func kathmandu(_ c: DSTCase) throws {
    try Self.check(c)
  }
  @Test("Pacific/Apia (2011-12-30 skipped)", arguments: apiaCases) func apia(_ c: DSTCase) throws {
    try Self.check(c)
  }

  @Test(
    "across a fall-back, overlap both fires on every real 10 minutes; once drops the repeated hour")
  func fallBackGrid() throws {
    let from = instant("2026-10-31T00:00:00Z")
    let grid = (1...312).map { from + Int64($0) * 600_000_000 }  // 52 hours of real time
    let both = try Schedule(cronSpec("*/10 * * * *", "America/New_York", overlap: .both))
    #expect(both.fireTimes(after: from, count: 312) == grid)
    let once = try Schedule(cronSpec("*/10 * * * *", "America/New_York"))
    let repeatedHour = instant("2026-11-01T06:00:00Z")..<instant("2026-11-01T07:00:00Z")
    #expect(once.fireTimes(after: from, count: 306) == grid.filter { !repeatedHour.contains($0) })
  }

  @Test("across a spring-forward, every real 5 minutes fires exactly once")
  func springForwardGrid() throws {
    let from = instant("2026-03-07T00:00:00Z")
    let grid = (1...600).map { from + Int64($0) * 300_000_000 }
    for gap in DSTPolicy.Gap.allCases {
      let schedule = try Schedule(cronSpec("*/5 * * * *", "America/New_York", gap: gap))
      #expect(schedule.fireTimes(after: from, count: 600) == grid)
    }
  }
}
