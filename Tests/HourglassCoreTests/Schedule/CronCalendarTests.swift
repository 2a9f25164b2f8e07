import Testing

@testable import HourglassCore

/// Calendar corner cases in UTC (no DST involved).
struct CalendarCase: CustomTestStringConvertible, Sendable {
  var cron: String
  var after: String
  var expected: [String]
  var testDescription: String { "'\(cron)' after \(after)" }
}

@Suite("Cron calendar")
struct CronCalendarTests {
  static let cases: [CalendarCase] = [
    // 29 February: leap years only, and 2100 is not one.
    CalendarCase(
      cron: "0 0 29 2 *", after: "2026-01-01T00:00:00Z",
      expected: [
        "2028-02-29T00:00:00+00:00", "2032-02-29T00:00:00+00:00", "2036-02-29T00:00:00+00:00",
      ]),
    CalendarCase(
      cron: "0 0 29 2 *", after: "2096-03-01T00:00:00Z", expected: ["2104-02-29T00:00:00+00:00"]),
    CalendarCase(
      cron: "0 12 29 2 *", after: "2000-01-01T00:00:00Z",
      expected: ["2000-02-29T12:00:00+00:00", "2004-02-29T12:00:00+00:00"]),
    // The 31st: only in months that have one.
    CalendarCase(
      cron: "0 0 31 * *", after: "2026-01-01T00:00:00Z",
      expected: [
        "2026-01-31T00:00:00+00:00", "2026-03-31T00:00:00+00:00", "2026-05-31T00:00:00+00:00",
        "2026-07-31T00:00:00+00:00", "2026-08-31T00:00:00+00:00", "2026-10-31T00:00:00+00:00",
        "2026-12-31T00:00:00+00:00", "2027-01-31T00:00:00+00:00",
      ]),
    CalendarCase(
      cron: "0 0 30,31 2,4 *", after: "2026-01-01T00:00:00Z",
      expected: ["2026-04-30T00:00:00+00:00", "2027-04-30T00:00:00+00:00"]),
    // Day-of-month OR day-of-week when both are restricted: the 1st or any Monday.
    CalendarCase(
      cron: "0 0 1 * 1", after: "2026-04-20T00:00:00Z",
      expected: [
        "2026-04-27T00:00:00+00:00", "2026-05-01T00:00:00+00:00", "2026-05-04T00:00:00+00:00",
        "2026-05-11T00:00:00+00:00", "2026-05-18T00:00:00+00:00", "2026-05-25T00:00:00+00:00",
        "2026-06-01T00:00:00+00:00", "2026-06-08T00:00:00+00:00",
      ]),
    // Friday the 13th is not an AND in cron: the 13th or any Friday.
    CalendarCase(
      cron: "0 0 13 * FRI", after: "2026-04-01T00:00:00Z",
      expected: [
        "2026-04-03T00:00:00+00:00", "2026-04-10T00:00:00+00:00", "2026-04-13T00:00:00+00:00",
        "2026-04-17T00:00:00+00:00",
      ]),
    // A field written with a leading * is unrestricted, so the other alone decides (AND).
    CalendarCase(
      cron: "0 0 * * 1", after: "2026-04-28T00:00:00Z",
      expected: ["2026-05-04T00:00:00+00:00", "2026-05-11T00:00:00+00:00"]),
    CalendarCase(
      cron: "0 0 1 * *", after: "2026-04-28T00:00:00Z",
      expected: ["2026-05-01T00:00:00+00:00", "2026-06-01T00:00:00+00:00"]),
    CalendarCase(
      cron: "0 0 */2 * 1", after: "2026-05-01T00:00:00Z",  // odd days that are Mondays (Vixie)
      expected: [
        "2026-05-11T00:00:00+00:00", "2026-05-25T00:00:00+00:00", "2026-06-01T00:00:00+00:00",
      ]),
    CalendarCase(
      cron: "0 0 ? * 1", after: "2026-04-28T00:00:00Z",
      expected: ["2026-05-04T00:00:00+00:00", "2026-05-11T00:00:00+00:00"]),
    // Seconds field.
    CalendarCase(
      cron: "*/15 30 9 * * *", after: "2026-01-01T09:30:20Z",
      expected: [
        "2026-01-01T09:30:30+00:00", "2026-01-01T09:30:45+00:00", "2026-01-02T09:30:00+00:00",
        "2026-01-02T09:30:15+00:00",
      ]),
    CalendarCase(
      cron: "5 * * * * *", after: "2026-12-31T23:59:05Z",
      expected: ["2027-01-01T00:00:05+00:00", "2027-01-01T00:01:05+00:00"]),
    CalendarCase(
      cron: "59 59 23 31 12 *", after: "2026-06-01T00:00:00Z",
      expected: ["2026-12-31T23:59:59+00:00"]),
    // Strictly after: an exact match at the start instant is not returned.
    CalendarCase(
      cron: "0 * * * *", after: "2026-01-01T10:00:00Z", expected: ["2026-01-01T11:00:00+00:00"]),
    CalendarCase(
      cron: "0 * * * *", after: "2026-01-01T09:59:59.999999Z",
      expected: ["2026-01-01T10:00:00+00:00"]),
    // Macros, weekday 7, month rollover, year rollover.
    CalendarCase(
      cron: "@weekly", after: "2026-01-01T00:00:00Z",
      expected: ["2026-01-04T00:00:00+00:00", "2026-01-11T00:00:00+00:00"]),
    CalendarCase(
      cron: "@yearly", after: "2026-01-01T00:00:00Z", expected: ["2027-01-01T00:00:00+00:00"]),
    CalendarCase(
      cron: "0 0 * * 7", after: "2026-01-01T00:00:00Z", expected: ["2026-01-04T00:00:00+00:00"]),
    CalendarCase(
      cron: "0 0 1 jan,jul *", after: "2026-02-01T00:00:00Z",
      expected: ["2026-07-01T00:00:00+00:00", "2027-01-01T00:00:00+00:00"]),
    CalendarCase(
      cron: "0 9-17/4 * * mon-fri", after: "2026-01-02T16:00:00Z",
      expected: [
        "2026-01-02T17:00:00+00:00", "2026-01-05T09:00:00+00:00", "2026-01-05T13:00:00+00:00",
      ]),
  ]

  @Test("next fire times", arguments: cases)
  func calendar(_ c: CalendarCase) throws {
    #expect(try fires(cronSpec(c.cron), after: c.after, count: c.expected.count) == c.expected)
  }

  @Test("the cron's zone applies to day boundaries: 0 0 * * * in Asia/Kathmandu is 18:15 UTC")
  func zoneMidnight() throws {
    let schedule = try Schedule(cronSpec("0 0 * * *", "Asia/Kathmandu"))
    let t = try #require(schedule.nextFireTime(after: instant("2026-06-01T00:00:00Z")))
    #expect(RFC3339.formatUTC(micros: t) == "2026-06-01T18:15:00Z")
  }

  @Test("civil date arithmetic round-trips over 1900–2400")
  func civilRoundTrip() {
    var day = CivilTime.days(year: 1900, month: 1, day: 1)
    let last = CivilTime.days(year: 2400, month: 12, day: 31)
    var weekday = CivilTime.weekday(days: day)
    #expect(weekday == 1)  // 1900-01-01 was a Monday
    var mismatches = 0
    while day <= last {
      let d = CivilTime.date(days: day)
      if CivilTime.days(year: d.year, month: d.month, day: d.day) != day { mismatches += 1 }
      if d.day < 1 || d.day > CivilTime.daysInMonth(year: d.year, month: d.month) {
        mismatches += 1
      }
      if CivilTime.weekday(days: day) != weekday { mismatches += 1 }
      weekday = (weekday + 1) % 7
      day += 1
    }
    #expect(mismatches == 0)
  }
}
