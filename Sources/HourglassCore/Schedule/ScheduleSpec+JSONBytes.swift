// The documented JSON shapes of ScheduleSpec, RetryPolicy and their parts, read and written without
// Codable. The Codable conformances stay the reference (and what tools and tests use); these give
// the same bytes (sorted keys, `/` not escaped) and accept the same documents, at a fraction of the
// cost, for the coordinator's hot paths. Tests check both directions against the Codable forms.

extension ScheduleSpec {
  /// Writes the documented JSON shape (every key, sorted; `null` for unset optional ones).
  public func writeJSON(to writer: inout JSONBytesWriter) {
    writer.object { w in
      if case .interval(_, let anchor) = kind { w.member("anchor", utcMicros: anchor) }
      switch kind {
      case .once(.instant(let micros)): w.member("at", utcMicros: micros)
      case .once(.local(let local)): w.member("at", local.description)
      case .cron(let expression): w.member("cron", expression)
      case .interval: break
      }
      w.member("dst", value: { dst.writeJSON(to: &$0) })
      w.member("end", utcMicros: end)
      if case .interval(let every, _) = kind { w.member("every", durationMicros: every) }
      w.member("jitter", durationMicros: jitter)
      w.member("kind", kind.tag)
      w.member("maxRuns", maxRuns)
      w.member("misfire", value: { misfire.writeJSON(to: &$0) })
      w.member("overlap", overlap.rawValue)
      w.member("start", utcMicros: start)
      w.member("timeZone", timeZone)
    }
  }

  /// Reads the documented JSON shape, as ``init(from:)`` does: unknown keys are ignored, missing
  /// optional ones take their defaults, values are parsed but not cross-checked.
  public init(json: JSONValue) throws(ScheduleValidationError) {
    let object = try JSONFields(json, path: "")
    let tag = try object.requiredString("kind")
    switch tag {
    case "once":
      switch try RFC3339.parse(try object.requiredString("at"), field: "at") {
      case .instant(let micros): kind = .once(.instant(micros))
      case .local(let local): kind = .once(.local(local))
      }
    case "cron":
      kind = .cron(try object.requiredString("cron"))
    case "interval":
      let every = try DurationText.parse(try object.requiredString("every"), field: "every")
      let anchor = try object.string("anchor").map { text throws(ScheduleValidationError) in try RFC3339.parseInstant(text, field: "anchor") }
      kind = .interval(every: every, anchor: anchor ?? 0)
    default:
      throw ScheduleValidationError(field: "kind", reason: "unknown schedule kind \"\(tag)\" (expected once, cron or interval)")
    }
    timeZone = try object.string("timeZone") ?? "UTC"
    start = try object.string("start").map { text throws(ScheduleValidationError) in try RFC3339.parseInstant(text, field: "start") }
    end = try object.string("end").map { text throws(ScheduleValidationError) in try RFC3339.parseInstant(text, field: "end") }
    maxRuns = try object.integer("maxRuns")
    jitter = try object.string("jitter").map { text throws(ScheduleValidationError) in try DurationText.parse(text, field: "jitter") } ?? 0
    dst = try object.value("dst").map { value throws(ScheduleValidationError) in try DSTPolicy(json: value) } ?? .defaults
    misfire = try object.value("misfire").map { value throws(ScheduleValidationError) in try MisfirePolicy(json: value) } ?? .defaults
    overlap = try object.enumeration("overlap", OverlapPolicy.self) ?? .defaults
  }
}

extension DSTPolicy {
  /// Writes `{"gap": …, "overlap": …}`.
  public func writeJSON(to writer: inout JSONBytesWriter) {
    writer.object { w in
      w.member("gap", gap.rawValue)
      w.member("overlap", overlap.rawValue)
    }
  }

  /// Reads what ``writeJSON(to:)`` writes; missing keys take the defaults.
  public init(json: JSONValue) throws(ScheduleValidationError) {
    let object = try JSONFields(json, path: "dst.")
    self.init(
      gap: try object.enumeration("gap", Gap.self) ?? .runAfter,
      overlap: try object.enumeration("overlap", Overlap.self) ?? .once)
  }
}

extension MisfirePolicy {
  /// Writes `{"grace": …, "limit": …, "policy": …}`.
  public func writeJSON(to writer: inout JSONBytesWriter) {
    writer.object { w in
      w.member("grace", durationMicros: grace)
      w.member("limit", limit)
      w.member("policy", mode.rawValue)
    }
  }

  /// Reads what ``writeJSON(to:)`` writes; missing keys take the defaults; the result is validated.
  public init(json: JSONValue) throws(ScheduleValidationError) {
    let object = try JSONFields(json, path: "misfire.")
    let d = MisfirePolicy.defaults
    let grace = try object.string("grace").map { text throws(ScheduleValidationError) in try DurationText.parse(text, field: "misfire.grace") }
    try self.init(
      try object.enumeration("policy", Mode.self) ?? d.mode, limit: try object.integer("limit") ?? d.limit,
      grace: grace ?? d.grace)
  }
}

extension RetryPolicy {
  /// Writes the documented JSON shape (sorted keys; `attemptTimeout` only when set).
  public func writeJSON(to writer: inout JSONBytesWriter) {
    writer.object { w in
      if let attemptTimeout { w.member("attemptTimeout", durationMicros: attemptTimeout) }
      w.member("initialBackoff", durationMicros: initialBackoff)
      w.member("jitter", jitter)
      w.member("maxAttempts", maxAttempts)
      w.member("maxBackoff", durationMicros: maxBackoff)
      w.member("multiplier", multiplier)
    }
  }

  /// Reads what ``writeJSON(to:)`` writes; missing keys take the defaults; the result is validated.
  public init(json: JSONValue) throws(ScheduleValidationError) {
    let object = try JSONFields(json, path: "retry.")
    func duration(_ key: String, _ field: String) throws(ScheduleValidationError) -> Int64? {
      try object.string(key).map { text throws(ScheduleValidationError) in try DurationText.parse(text, field: "retry." + field) }
    }
    let d = RetryPolicy.defaults
    try self.init(
      maxAttempts: try object.integer("maxAttempts") ?? d.maxAttempts,
      initialBackoff: try duration("initialBackoff", "initial-backoff") ?? d.initialBackoff,
      multiplier: try object.double("multiplier") ?? d.multiplier,
      maxBackoff: try duration("maxBackoff", "max-backoff") ?? d.maxBackoff,
      jitter: try object.double("jitter") ?? d.jitter,
      attemptTimeout: try duration("attemptTimeout", "attempt-timeout"))
  }
}

/// Typed access to one JSON object's members, with errors that name the field (`path` + key).
/// A member that is absent or `null` reads as `nil`, like `decodeIfPresent`.
public struct JSONFields: Sendable {
  private let members: [String: JSONValue]
  private let path: String

  /// Wraps `value`, which must be an object; `path` prefixes field names in errors (`"retry."`).
  public init(_ value: JSONValue, path: String) throws(ScheduleValidationError) {
    guard case .object(let list) = value else {
      throw ScheduleValidationError(field: path.isEmpty ? "json" : String(path.dropLast()), reason: "expected a JSON object")
    }
    var members: [String: JSONValue] = [:]
    members.reserveCapacity(list.count)
    for (key, value) in list { members[key] = value }
    self.members = members
    self.path = path
  }

  private func mismatch(_ key: String, _ expected: String) -> ScheduleValidationError {
    ScheduleValidationError(field: path + key, reason: "expected \(expected)")
  }

  /// The member's value unless absent or `null`.
  public func value(_ key: String) -> JSONValue? {
    guard let value = members[key], !value.isNull else { return nil }
    return value
  }

  /// A string member.
  public func string(_ key: String) throws(ScheduleValidationError) -> String? {
    guard let value = value(key) else { return nil }
    guard let text = value.stringValue else { throw mismatch(key, "a string") }
    return text
  }

  /// A string member that must be present.
  public func requiredString(_ key: String) throws(ScheduleValidationError) -> String {
    guard let text = try string(key) else { throw ScheduleValidationError(field: path + key, reason: "required") }
    return text
  }

  /// An integer member.
  public func integer(_ key: String) throws(ScheduleValidationError) -> Int? {
    guard let value = value(key) else { return nil }
    if let number = value.intValue { return number }
    // JSONDecoder also accepts an integral number written with a fraction or exponent (`3.0`).
    if let number = value.doubleValue, number == number.rounded(), let exact = Int(exactly: number) { return exact }
    throw mismatch(key, "an integer")
  }

  /// A number member.
  public func double(_ key: String) throws(ScheduleValidationError) -> Double? {
    guard let value = value(key) else { return nil }
    guard let number = value.doubleValue else { throw mismatch(key, "a number") }
    return number
  }

  /// A string member naming a case of `type`.
  public func enumeration<Value: RawRepresentable & CaseIterable>(_ key: String, _ type: Value.Type) throws(ScheduleValidationError) -> Value?
  where Value.RawValue == String {
    guard let text = try string(key) else { return nil }
    guard let value = Value(rawValue: text) else {
      let names = Value.allCases.map(\.rawValue).joined(separator: ", ")
      throw ScheduleValidationError(field: path + key, reason: "\"\(text)\" is not one of \(names)")
    }
    return value
  }
}
