/// A strict reader of the Prometheus text exposition format 0.0.4, for tests: it refuses what
/// a Prometheus server would refuse (bad names, bad escapes, a TYPE after samples, a family
/// split in two, duplicate series) and also what a well-formed histogram must not contain
/// (buckets that shrink, a missing `+Inf` bucket, `_count` unequal to it).
struct PrometheusText {
  /// One sample line.
  struct Sample: Equatable {
    var name: String
    var labels: [String: String]
    var value: Double
  }

  /// A metric family: its declared type and its samples.
  struct Family {
    var name: String
    var type: String
    var samples: [Sample] = []
  }

  /// A line the format does not allow.
  struct ParseError: Error, CustomStringConvertible {
    var line: Int
    var reason: String
    var description: String { "line \(line): \(reason)" }
  }

  private(set) var families: [String: Family] = [:]

  /// Parses `text`, or throws at the first violation.
  init(_ text: String) throws {
    guard text.isEmpty || text.hasSuffix("\n") else { throw ParseError(line: 0, reason: "the last line has no line feed") }
    var current: String?
    var finished: Set<String> = []
    var seen: Set<String> = []
    var lineNumber = 0
    for rawLine in text.split(separator: "\n", omittingEmptySubsequences: false).dropLast() {
      lineNumber += 1
      let line = String(rawLine)
      if line.isEmpty { continue }
      if line.hasPrefix("#") {
        let parts = line.split(separator: " ", maxSplits: 3, omittingEmptySubsequences: false).map(String.init)
        guard parts.count >= 3, parts[0] == "#", parts[1] == "TYPE" || parts[1] == "HELP" else { continue }  // a comment
        let name = parts[2]
        guard Self.isMetricName(name) else { throw ParseError(line: lineNumber, reason: "bad metric name \(name)") }
        if parts[1] == "TYPE" {
          guard parts.count == 4, ["counter", "gauge", "histogram", "summary", "untyped"].contains(parts[3]) else {
            throw ParseError(line: lineNumber, reason: "bad TYPE line")
          }
          guard families[name] == nil else { throw ParseError(line: lineNumber, reason: "a second TYPE for \(name), or TYPE after its samples") }
          if let current, current != name { finished.insert(current) }
          families[name] = Family(name: name, type: parts[3])
          current = name
        }
        continue
      }
      let sample = try Self.sample(line, lineNumber)
      let family = Self.familyName(of: sample.name, families: families)
      guard !finished.contains(family) else { throw ParseError(line: lineNumber, reason: "family \(family) is split") }
      if let current, current != family { finished.insert(current) }
      current = family
      let series = sample.name + "{" + sample.labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",") + "}"
      guard seen.insert(series).inserted else { throw ParseError(line: lineNumber, reason: "duplicate series \(series)") }
      if families[family] == nil { families[family] = Family(name: family, type: "untyped") }
      families[family]!.samples.append(sample)
    }
    for family in families.values {
      try Self.check(family)
    }
  }

  /// The value of the sample `name` with exactly `labels`, if present.
  func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
    for family in families.values {
      if let sample = family.samples.first(where: { $0.name == name && $0.labels == labels }) { return sample.value }
    }
    return nil
  }

  /// The family's declared type.
  func type(of family: String) -> String? { families[family]?.type }

  // MARK: Rules

  private static func familyName(of sample: String, families: [String: Family]) -> String {
    for suffix in ["_bucket", "_sum", "_count"] where sample.hasSuffix(suffix) {
      let base = String(sample.dropLast(suffix.count))
      if let family = families[base], family.type == "histogram" || family.type == "summary" { return base }
    }
    return sample
  }

  private static func check(_ family: Family) throws {
    for sample in family.samples where family.type == "counter" {
      guard sample.value >= 0, sample.name == family.name else { throw ParseError(line: 0, reason: "counter \(family.name) has \(sample)") }
    }
    guard family.type == "histogram" else { return }
    // Group by the labels other than `le`.
    var series: [[String: String]: (buckets: [(Double, Double)], sum: Double?, count: Double?)] = [:]
    for sample in family.samples {
      var key = sample.labels
      if sample.name == family.name + "_bucket" {
        guard let le = key.removeValue(forKey: "le"), let bound = parseValue(le) else {
          throw ParseError(line: 0, reason: "\(family.name) bucket without a valid le")
        }
        series[key, default: ([], nil, nil)].buckets.append((bound, sample.value))
      } else if sample.name == family.name + "_sum" {
        series[key, default: ([], nil, nil)].sum = sample.value
      } else if sample.name == family.name + "_count" {
        series[key, default: ([], nil, nil)].count = sample.value
      } else {
        throw ParseError(line: 0, reason: "histogram \(family.name) has a sample \(sample.name)")
      }
    }
    for (labels, one) in series {
      guard let count = one.count, one.sum != nil else { throw ParseError(line: 0, reason: "\(family.name)\(labels) lacks _sum or _count") }
      let buckets = one.buckets.sorted { $0.0 < $1.0 }
      guard let last = buckets.last, last.0 == .infinity, last.1 == count else {
        throw ParseError(line: 0, reason: "\(family.name)\(labels): +Inf bucket missing or unequal to _count")
      }
      for (a, b) in zip(buckets, buckets.dropFirst()) where b.1 < a.1 {
        throw ParseError(line: 0, reason: "\(family.name)\(labels): bucket le=\(b.0) has fewer than le=\(a.0)")
      }
    }
  }

  // MARK: Lexing

  static func isMetricName(_ name: String) -> Bool {
    guard let first = name.unicodeScalars.first, first.isASCIILetter || first == "_" || first == ":" else { return false }
    return name.unicodeScalars.allSatisfy { $0.isASCIILetter || $0.isASCIIDigit || $0 == "_" || $0 == ":" }
  }

  static func isLabelName(_ name: String) -> Bool {
    guard let first = name.unicodeScalars.first, first.isASCIILetter || first == "_" else { return false }
    return name.unicodeScalars.allSatisfy { $0.isASCIILetter || $0.isASCIIDigit || $0 == "_" }
  }

  static func parseValue(_ text: String) -> Double? {
    switch text {
    case "+Inf", "Inf": return .infinity
    case "-Inf": return -.infinity
    case "NaN": return .nan
    default:
      guard !text.isEmpty, text.allSatisfy({ $0.isNumber || "+-.eE".contains($0) }) else { return nil }
      return Double(text)
    }
  }

  private static func sample(_ line: String, _ number: Int) throws -> Sample {
    let scalars = Array(line.unicodeScalars)
    var index = 0
    var name = ""
    while index < scalars.count, scalars[index] != "{", scalars[index] != " " {
      name.unicodeScalars.append(scalars[index])
      index += 1
    }
    guard isMetricName(name) else { throw ParseError(line: number, reason: "bad metric name \(name)") }
    var labels: [String: String] = [:]
    if index < scalars.count, scalars[index] == "{" {
      index += 1
      while true {
        guard index < scalars.count else { throw ParseError(line: number, reason: "unterminated labels") }
        if scalars[index] == "}" {
          index += 1
          break
        }
        var label = ""
        while index < scalars.count, scalars[index] != "=" {
          label.unicodeScalars.append(scalars[index])
          index += 1
        }
        guard isLabelName(label), index + 1 < scalars.count, scalars[index + 1] == "\"" else {
          throw ParseError(line: number, reason: "bad label \(label)")
        }
        index += 2
        var value = ""
        while true {
          guard index < scalars.count else { throw ParseError(line: number, reason: "unterminated label value") }
          let scalar = scalars[index]
          index += 1
          if scalar == "\"" { break }
          if scalar == "\\" {
            guard index < scalars.count else { throw ParseError(line: number, reason: "dangling escape") }
            switch scalars[index] {
            case "\\": value += "\\"
            case "\"": value += "\""
            case "n": value += "\n"
            default: throw ParseError(line: number, reason: "bad escape \\\(scalars[index])")
            }
            index += 1
          } else {
            value.unicodeScalars.append(scalar)
          }
        }
        guard labels.updateValue(value, forKey: label) == nil else { throw ParseError(line: number, reason: "label \(label) twice") }
        guard index < scalars.count else { throw ParseError(line: number, reason: "unterminated labels") }
        if scalars[index] == "," {
          index += 1
        } else if scalars[index] != "}" {
          throw ParseError(line: number, reason: "expected , or } after a label")
        }
      }
    }
    guard index < scalars.count, scalars[index] == " " else { throw ParseError(line: number, reason: "no value") }
    let rest = String(String.UnicodeScalarView(scalars[(index + 1)...])).split(separator: " ", omittingEmptySubsequences: false)
    guard rest.count == 1 || rest.count == 2, let value = parseValue(String(rest[0])) else {
      throw ParseError(line: number, reason: "bad value in \(line)")
    }
    if rest.count == 2, Int64(rest[1]) == nil { throw ParseError(line: number, reason: "bad timestamp") }
    return Sample(name: name, labels: labels, value: value)
  }
}

extension Unicode.Scalar {
  fileprivate var isASCIILetter: Bool { ("a"..."z").contains(self) || ("A"..."Z").contains(self) }
  fileprivate var isASCIIDigit: Bool { ("0"..."9").contains(self) }
}
