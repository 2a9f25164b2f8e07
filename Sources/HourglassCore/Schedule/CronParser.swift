/// Parses cron expressions into ``CronExpression``.
///
/// Grammar (case-insensitive), fields separated by spaces or tabs:
///
/// ```
/// expression := [second] minute hour day-of-month month day-of-week | macro
/// field      := element ("," element)*
/// element    := ("*" | "?" | value | value "-" value) ["/" step]
/// macro      := @yearly | @annually | @monthly | @weekly | @daily | @midnight | @hourly
/// ```
///
/// Ranges: second and minute 0–59, hour 0–23, day-of-month 1–31, month 1–12 or `JAN`–`DEC`,
/// day-of-week 0–7 or `SUN`–`SAT` (0 and 7 are Sunday). `?` means the same as `*` and is only
/// accepted in the two day fields. `value/step` means `value-max/step`. A range must not run
/// backwards (`FRI-MON` is rejected: write `FRI-SAT,SUN-MON`).
public enum CronParser {
  /// The longest expression accepted; anything longer is refused before it is looked at.
  public static let maximumLength = 1024

  /// Parses `text`, or throws an error naming the field and the reason.
  public static func parse(_ text: String) throws(ScheduleValidationError) -> CronExpression {
    guard text.utf8.count <= maximumLength else {
      throw error("expression longer than \(maximumLength) characters")
    }
    let trimmed = text.trimmingWhitespace()
    if trimmed.isEmpty { throw error("empty expression") }
    if trimmed.hasPrefix("@") {
      let expanded: String
      switch trimmed.lowercased() {
      case "@yearly", "@annually": expanded = "0 0 1 1 *"
      case "@monthly": expanded = "0 0 1 * *"
      case "@weekly": expanded = "0 0 * * 0"
      case "@daily", "@midnight": expanded = "0 0 * * *"
      case "@hourly": expanded = "0 * * * *"
      default:
        throw error(
          "unknown macro \"\(trimmed)\" (expected @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly)"
        )
      }
      return try parseFields(expanded, source: trimmed)
    }
    return try parseFields(trimmed, source: trimmed)
  }

  private static func error(_ reason: String) -> ScheduleValidationError {
    ScheduleValidationError(field: "cron", reason: reason)
  }

  private struct FieldSpec {
    var name: String
    var min: Int
    var max: Int
    var names: [String]  // index + nameBase = value
    var nameBase: Int
    var allowsQuestion: Bool
  }

  private static let secondSpec = FieldSpec(
    name: "second", min: 0, max: 59, names: [], nameBase: 0, allowsQuestion: false)
  private static let minuteSpec = FieldSpec(
    name: "minute", min: 0, max: 59, names: [], nameBase: 0, allowsQuestion: false)
  private static let hourSpec = FieldSpec(
    name: "hour", min: 0, max: 23, names: [], nameBase: 0, allowsQuestion: false)
  private static let domSpec = FieldSpec(
    name: "day-of-month", min: 1, max: 31, names: [], nameBase: 0, allowsQuestion: true)
  private static let monthSpec = FieldSpec(
    name: "month", min: 1, max: 12,
    names: ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
    nameBase: 1,
    allowsQuestion: false)
  private static let dowSpec = FieldSpec(
    name: "day-of-week", min: 0, max: 7, names: ["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
    nameBase: 0,
    allowsQuestion: true)

  private static func parseFields(
    _ text: String, source: String
  ) throws(ScheduleValidationError)
    -> CronExpression
  {
    let fields = text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" })
      .map(String.init)
    let specs: [FieldSpec]
    switch fields.count {
    case 5: specs = [minuteSpec, hourSpec, domSpec, monthSpec, dowSpec]
    case 6: specs = [secondSpec, minuteSpec, hourSpec, domSpec, monthSpec, dowSpec]
    default:
      throw error(
        "expected 5 fields (minute hour day-of-month month day-of-week) or 6 (with leading seconds), got \(fields.count)"
      )
    }
    var masks: [UInt64] = []
    for (field, spec) in zip(fields, specs) {
      masks.append(try parseField(field, spec))
    }
    if fields.count == 5 { masks.insert(1, at: 0) }
    var dow = masks[5]
    if dow & (1 << 7) != 0 { dow = (dow | 1) & ~(1 << 7) }
    let domStar = fields[fields.count - 3].hasPrefix("*") || fields[fields.count - 3].hasPrefix("?")
    let dowStar = fields[fields.count - 1].hasPrefix("*") || fields[fields.count - 1].hasPrefix("?")
    let expression = CronExpression(
      seconds: masks[0], minutes: masks[1], hours: UInt32(masks[2]), daysOfMonth: UInt32(masks[3]),
      months: UInt16(masks[4]), daysOfWeek: UInt8(dow), dayOfMonthIsStar: domStar,
      dayOfWeekIsStar: dowStar,
      source: source)
    try checkSatisfiable(expression)
    return expression
  }

  /// Refuses expressions that can never fire, such as `0 0 30 2 *`.
  private static func checkSatisfiable(_ e: CronExpression) throws(ScheduleValidationError) {
    // With both day fields restricted, any week has a matching weekday.
    if !e.dayOfMonthIsStar && !e.dayOfWeekIsStar { return }
    // One is unrestricted, so a day needs both: a restricted weekday field is satisfiable in any
    // month that has a matching day-of-month (every month has every weekday on 28 consecutive days,
    // but a day-of-month set may be small); check month lengths, with 29 for February.
    let monthNames = [
      "January", "February", "March", "April", "May", "June", "July", "August", "September",
      "October", "November", "December",
    ]
    let maxLengths: [Int] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
    for month in 1...12 where e.months & (1 << UInt16(month)) != 0 {
      let length = maxLengths[month - 1]
      let mask = e.daysOfMonth & (length == 31 ? UInt32.max : (UInt32(1) << UInt32(length + 1)) - 1)
      if mask != 0 {
        // Some day exists; with a restricted weekday field, some year puts a wanted weekday on it.
        return
      }
    }
    let chosen = (1...12).filter { e.months & (1 << UInt16($0)) != 0 }.map { monthNames[$0 - 1] }
    let smallest = e.daysOfMonth.trailingZeroBitCount
    throw error("day-of-month \(smallest) never occurs in \(chosen.joined(separator: ", "))")
  }

  private static func parseField(
    _ text: String, _ spec: FieldSpec
  ) throws(ScheduleValidationError)
    -> UInt64
  {
    var mask: UInt64 = 0
    let elements = text.split(separator: ",", omittingEmptySubsequences: false)
    for element in elements {
      if element.isEmpty {
        throw error("\(spec.name): empty list element in \"\(text)\"")
      }
      mask |= try parseElement(Substring(element), spec)
    }
    return mask
  }

  private static func parseElement(
    _ element: Substring, _ spec: FieldSpec
  )
    throws(ScheduleValidationError) -> UInt64
  {
    var rangePart = element
    var step = 1
    if let slash = element.firstIndex(of: "/") {
      rangePart = element[..<slash]
      let stepText = element[element.index(after: slash)...]
      guard !stepText.isEmpty, stepText.allSatisfy({ $0.isASCII && $0.isNumber }) else {
        throw error("\(spec.name): step \"\(stepText)\" is not a positive number")
      }
      guard stepText.count <= 4, let value = Int(stepText) else {
        throw error("\(spec.name) step \(stepText) out of range 1-\(spec.max)")
      }
      guard value >= 1 else { throw error("\(spec.name): step 0 must be at least 1") }
      guard value <= spec.max else {
        throw error("\(spec.name) step \(value) out of range 1-\(spec.max)")
      }
      step = value
      if rangePart.isEmpty {
        throw error("\(spec.name): missing range before \"/\" in \"\(element)\"")
      }
    }
    var low: Int
    var high: Int
    if rangePart == "*" || rangePart == "?" {
      if rangePart == "?" && !spec.allowsQuestion {
        throw error("\(spec.name): \"?\" is only allowed in day-of-month and day-of-week")
      }
      low = spec.min
      high = spec.name == "day-of-week" ? 6 : spec.max
    } else if let dash = rangePart.firstIndex(of: "-") {
      let lowText = rangePart[..<dash]
      let highText = rangePart[rangePart.index(after: dash)...]
      low = try value(lowText, spec)
      high = try value(highText, spec)
      if low > high {
        throw error(
          "\(spec.name) range \(lowText)-\(highText) runs backwards (start \(low) is after end \(high))"
        )
      }
    } else {
      low = try value(rangePart, spec)
      high = element.contains("/") ? (spec.name == "day-of-week" ? 6 : spec.max) : low
      if element.contains("/") && low > high { high = low }
    }
    var mask: UInt64 = 0
    var v = low
    while v <= high {
      mask |= 1 << UInt64(v)
      v += step
    }
    return mask
  }

  private static func value(
    _ text: Substring, _ spec: FieldSpec
  ) throws(ScheduleValidationError)
    -> Int
  {
    if text.isEmpty { throw error("\(spec.name): missing value") }
    if text.allSatisfy({ $0.isASCII && $0.isNumber }) {
      guard text.count <= 4, let v = Int(text) else {
        throw error("\(spec.name) \(text) out of range \(spec.min)-\(spec.max)")
      }
      guard v >= spec.min && v <= spec.max else {
        throw error("\(spec.name) \(v) out of range \(spec.min)-\(spec.max)")
      }
      return v
    }
    let lowered = text.lowercased()
    if let index = spec.names.firstIndex(of: lowered) {
      return index + spec.nameBase
    }
    if spec.names.isEmpty {
      throw error("\(spec.name): \"\(text)\" is not a number")
    }
    throw error(
      "\(spec.name): unknown name \"\(text)\" (expected \(spec.names.map { $0.uppercased() }.joined(separator: ", ")) or a number)"
    )
  }
}

extension StringProtocol {
  /// The string without leading and trailing spaces, tabs and line breaks.
  func trimmingWhitespace() -> String {
    let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }
    guard let first = firstIndex(where: { !isSpace($0) }) else { return "" }
    let last = lastIndex(where: { !isSpace($0) })!
    return String(self[first...last])
  }
}
