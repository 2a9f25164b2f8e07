import Testing

@testable import HourglassCore

@Suite("Cron parser")
struct CronParserTests {
  static func bits(_ values: [Int]) -> UInt64 { values.reduce(0) { $0 | (1 << UInt64($1)) } }

  @Test("5-field expressions, lists, ranges, steps")
  func fiveFields() throws {
    let e = try CronExpression("0,30 9-17/2 1-10/3 */4 *")
    #expect(e.seconds == 1)
    #expect(e.minutes == Self.bits([0, 30]))
    #expect(UInt64(e.hours) == Self.bits([9, 11, 13, 15, 17]))
    #expect(UInt64(e.daysOfMonth) == Self.bits([1, 4, 7, 10]))
    #expect(UInt64(e.months) == Self.bits([1, 5, 9]))
    #expect(UInt64(e.daysOfWeek) == Self.bits([0, 1, 2, 3, 4, 5, 6]))
    #expect(!e.dayOfMonthIsStar)
    #expect(e.dayOfWeekIsStar)
  }

  @Test("6 fields: leading seconds")
  func sixFields() throws {
    let e = try CronExpression("*/15 0 12 * * *")
    #expect(e.seconds == Self.bits([0, 15, 30, 45]))
    #expect(e.minutes == 1)
    #expect(e.hours == 1 << 12)
  }

  @Test("month and weekday names, case-insensitive; 7 is Sunday")
  func names() throws {
    let e = try CronExpression("0 12 * JAN,jul,Dec mon-FRI")
    #expect(UInt64(e.months) == Self.bits([1, 7, 12]))
    #expect(UInt64(e.daysOfWeek) == Self.bits([1, 2, 3, 4, 5]))
    #expect(try CronExpression("0 0 * * 7").daysOfWeek == 1)
    #expect(try CronExpression("0 0 * * 5-7").daysOfWeek == UInt8(Self.bits([0, 5, 6])))
    #expect(try CronExpression("0 0 * * sun").daysOfWeek == 1)
    #expect(try CronExpression("0 0 * * 1/2").daysOfWeek == UInt8(Self.bits([1, 3, 5])))
    #expect(try CronExpression("0 0 * feb-apr/2 *").months == UInt16(Self.bits([2, 4])))
  }

  @Test(
    "macros",
    arguments: [
      ("@yearly", "0 0 1 1 *"), ("@annually", "0 0 1 1 *"), ("@monthly", "0 0 1 * *"),
      ("@weekly", "0 0 * * 0"), ("@daily", "0 0 * * *"), ("@midnight", "0 0 * * *"),
      ("@hourly", "0 * * * *"),
      ("@DAILY", "0 0 * * *"),
    ])
  func macros(macro: String, equivalent: String) throws {
    let a = try CronExpression(macro)
    let b = try CronExpression(equivalent)
    #expect(a.seconds == b.seconds && a.minutes == b.minutes && a.hours == b.hours)
    #expect(a.daysOfMonth == b.daysOfMonth && a.months == b.months && a.daysOfWeek == b.daysOfWeek)
    #expect(a.dayOfMonthIsStar == b.dayOfMonthIsStar && a.dayOfWeekIsStar == b.dayOfWeekIsStar)
    #expect(a.source == macro)
  }

  @Test("whitespace: tabs and repeated spaces separate fields")
  func whitespace() throws {
    let e = try CronExpression("  5\t4  *  * *  ")
    #expect(e.minutes == 1 << 5)
    #expect(e.hours == 1 << 4)
  }

  @Test(
    "errors name the field and the reason",
    arguments: [
      ("0 24 * * *", "cron: hour 24 out of range 0-23"),
      ("60 * * * *", "cron: minute 60 out of range 0-59"),
      ("60 * * * * *", "cron: second 60 out of range 0-59"),
      ("* * 0 * *", "cron: day-of-month 0 out of range 1-31"),
      ("* * 32 * *", "cron: day-of-month 32 out of range 1-31"),
      ("* * * 13 *", "cron: month 13 out of range 1-12"),
      ("* * * 0 *", "cron: month 0 out of range 1-12"),
      ("* * * * 8", "cron: day-of-week 8 out of range 0-7"),
      (
        "* * * *",
        "cron: expected 5 fields (minute hour day-of-month month day-of-week) or 6 (with leading seconds), got 4"
      ),
      (
        "* * * * * * *",
        "cron: expected 5 fields (minute hour day-of-month month day-of-week) or 6 (with leading seconds), got 7"
      ),
      ("", "cron: empty expression"),
      ("   ", "cron: empty expression"),
      ("*/0 * * * *", "cron: minute: step 0 must be at least 1"),
      ("*/60 * * * *", "cron: minute step 60 out of range 1-59"),
      ("*/x * * * *", "cron: minute: step \"x\" is not a positive number"),
      ("5-1 * * * *", "cron: minute range 5-1 runs backwards (start 5 is after end 1)"),
      (
        "* * * * FRI-MON", "cron: day-of-week range FRI-MON runs backwards (start 5 is after end 1)"
      ),
      (
        "* * * FOO *",
        "cron: month: unknown name \"FOO\" (expected JAN, FEB, MAR, APR, MAY, JUN, JUL, AUG, SEP, OCT, NOV, DEC or a number)"
      ),
      ("L * * * *", "cron: minute: \"L\" is not a number"),
      ("1,,2 * * * *", "cron: minute: empty list element in \"1,,2\""),
      ("? * * * *", "cron: minute: \"?\" is only allowed in day-of-month and day-of-week"),
      ("/5 * * * *", "cron: minute: missing range before \"/\" in \"/5\""),
      ("1- * * * *", "cron: minute: missing value"),
      ("99999999999999999999 * * * *", "cron: minute 99999999999999999999 out of range 0-59"),
      ("0 0 30 2 *", "cron: day-of-month 30 never occurs in February"),
      ("0 0 31 4,6 *", "cron: day-of-month 31 never occurs in April, June"),
      (
        "@reboot",
        "cron: unknown macro \"@reboot\" (expected @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly)"
      ),
    ])
  func errors(expression: String, message: String) {
    #expect(throws: ScheduleValidationError.self) { try CronExpression(expression) }
    do {
      _ = try CronExpression(expression)
    } catch {
      #expect(error.field == "cron")
      #expect(error.description == message)
    }
  }

  @Test("satisfiable unusual days are accepted")
  func satisfiable() throws {
    _ = try CronExpression("0 0 29 2 *")  // leap days
    _ = try CronExpression("0 0 31 * *")  // 7 months a year
    _ = try CronExpression("0 0 30 2 1")  // both restricted: any Monday in February
  }

  @Test("fuzz: random strings never crash; each parses or names the cron field")
  func fuzzRandomStrings() {
    var rng = SeededGenerator(seed: 0xC0FFEE)
    let alphabet = Array(
      "0123456789*/-,?@ \t\t  LW#abcdefhjlmnoprstuwyJANFEBMONSUNxyz\u{00e9}\u{1F600}")
    let zone = try! ZoneRules.named("America/New_York")
    var parsed = 0
    for _ in 0..<20_000 {
      let length = Int.random(in: 0...24, using: &rng)
      let text = String((0..<length).map { _ in alphabet.randomElement(using: &rng)! })
      do {
        let e = try CronExpression(text)
        parsed += 1
        // A parsed expression must produce a matching fire time within the supported range.
        let start = Int64.random(in: 0...4_102_444_800, using: &rng)
        if let t = Schedule.cronNext(e, zone: zone, dst: .defaults, after: start * 1_000_000) {
          #expect(t > start * 1_000_000)
        }
      } catch {
        #expect(error.field == "cron")
        #expect(!error.reason.isEmpty)
      }
    }
  }

  @Test("fuzz: random well-formed expressions parse and their next match matches")
  func fuzzWellFormed() throws {
    var rng = SeededGenerator(seed: 42)
    for _ in 0..<3_000 {
      let text = RandomCron.expression(using: &rng, seconds: Bool.random(using: &rng))
      let e: CronExpression
      do { e = try CronExpression(text) } catch {
        // Only unsatisfiable day/month combinations may be refused.
        #expect(error.reason.contains("never occurs"), "\(text): \(error)")
        continue
      }
      let start = Int64.random(in: 0...4_102_444_800, using: &rng)
      let wall = try #require(e.nextMatch(atOrAfter: start, lastYear: 9999), "\(text)")
      #expect(wall >= start)
      #expect(e.matches(civilSeconds: wall), "\(text) at \(wall)")
    }
  }
}

/// Random cron expressions from the grammar, biased toward ones that fire often.
enum RandomCron {
  static func field(
    min: Int, max: Int, using rng: inout SeededGenerator, starWeight: Int = 3
  )
    -> String
  {
    switch Int.random(in: 0..<(6 + starWeight), using: &rng) {
    case 0: return String(Int.random(in: min...max, using: &rng))
    case 1:
      let a = Int.random(in: min...max, using: &rng)
      let b = Int.random(in: a...max, using: &rng)
      return "\(a)-\(b)"
    case 2: return "*/\(Int.random(in: 1...Swift.max(1, (max - min + 1) / 2), using: &rng))"
    case 3:
      let a = Int.random(in: min...max, using: &rng)
      let b = Int.random(in: a...max, using: &rng)
      return "\(a)-\(b)/\(Int.random(in: 1...3, using: &rng))"
    case 4, 5:
      let n = Int.random(in: 2...4, using: &rng)
      return (0..<n).map { _ in String(Int.random(in: min...max, using: &rng)) }.joined(
        separator: ",")
    default: return "*"
    }
  }

  static func expression(using rng: inout SeededGenerator, seconds: Bool) -> String {
    var parts: [String] = []
    if seconds { parts.append(field(min: 0, max: 59, using: &rng)) }
    parts.append(field(min: 0, max: 59, using: &rng, starWeight: 1))
    parts.append(field(min: 0, max: 23, using: &rng))
    parts.append(field(min: 1, max: 31, using: &rng, starWeight: 10))
    parts.append(field(min: 1, max: 12, using: &rng, starWeight: 12))
    parts.append(field(min: 0, max: 7, using: &rng, starWeight: 8))
    return parts.joined(separator: " ")
  }
}
