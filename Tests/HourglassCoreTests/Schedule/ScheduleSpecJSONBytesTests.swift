import Foundation
import Testing

@testable import HourglassCore

/// The Codable-free JSON reader and writer must agree with the Codable forms in both directions:
/// stores written by either are read by the other.
@Suite("ScheduleSpec JSON without Codable")
struct ScheduleSpecJSONBytesTests {
  static func codableBytes<T: Encodable>(_ value: T, escapingSlashes: Bool = false) throws -> [UInt8] {
    let encoder = JSONEncoder()
    encoder.outputFormatting = escapingSlashes ? [.sortedKeys] : [.sortedKeys, .withoutEscapingSlashes]
    return Array(try encoder.encode(value))
  }

  static func fastBytes(_ spec: ScheduleSpec) -> [UInt8] {
    var writer = JSONBytesWriter()
    spec.writeJSON(to: &writer)
    return writer.bytes
  }

  static let retries: [RetryPolicy] = [
    .defaults,
    try! RetryPolicy(maxAttempts: 5, initialBackoff: 500_000, multiplier: 3, maxBackoff: 60_000_000, jitter: 0.1, attemptTimeout: 600_000_000),
    try! RetryPolicy(maxAttempts: 1, initialBackoff: 0, multiplier: 1.5, maxBackoff: 0, jitter: 0),
  ]

  @Test("writes exactly the bytes JSONEncoder writes (sorted keys, unescaped slashes)", arguments: ScheduleSpecCodingTests.samples)
  func sameBytesAsCodable(_ spec: ScheduleSpec) throws {
    let ours = Self.fastBytes(spec)
    #expect(String(decoding: ours, as: UTF8.self) == String(decoding: try Self.codableBytes(spec), as: UTF8.self))
  }

  @Test("reads what JSONEncoder writes, escaped slashes included, and JSONDecoder reads what it writes", arguments: ScheduleSpecCodingTests.samples)
  func readsCodableOutput(_ spec: ScheduleSpec) throws {
    let codable = try Self.codableBytes(spec, escapingSlashes: true)
    #expect(try ScheduleSpec(json: try JSONValue.parse(codable)) == spec)
    #expect(try JSONDecoder().decode(ScheduleSpec.self, from: Data(Self.fastBytes(spec))) == spec)
  }

  @Test("retry policies agree with their Codable form", arguments: retries)
  func retryPolicies(_ retry: RetryPolicy) throws {
    var writer = JSONBytesWriter()
    retry.writeJSON(to: &writer)
    #expect(writer.bytes == (try Self.codableBytes(retry)))
    #expect(try RetryPolicy(json: try JSONValue.parse(writer.bytes)) == retry)
    #expect(try RetryPolicy(json: try JSONValue.parse(Array("{}".utf8))) == .defaults)
  }

  @Test("minimal documents take the defaults; unknown keys and null are ignored")
  func minimal() throws {
    let spec = try ScheduleSpec(
      json: try JSONValue.parse(Array(#" { "kind" : "cron", "cron":"0 9 * * 1-5", "x": {"y": [1, 2.5e3, true, null]}, "maxRuns": null } "#.utf8)))
    #expect(spec == ScheduleSpec.cron("0 9 * * 1-5"))
    let retry = try RetryPolicy(json: try JSONValue.parse(Array(#"{"maxAttempts": 4.0}"#.utf8)))
    #expect(retry.maxAttempts == 4)
  }

  @Test(
    "bad documents are refused with the field named, as the Codable reader does",
    arguments: ScheduleSpecCodingTests.refusedDocuments + [
      (#"{"kind":"cron"}"#, "cron: required"),
      (#"{"kind":"cron","cron":7}"#, "cron: expected a string"),
      (#"{"kind":"cron","cron":"* * * * *","overlap":"sometimes"}"#, "overlap: \"sometimes\" is not one of"),
      (#"{"kind":"cron","cron":"* * * * *","maxRuns":1.5}"#, "maxRuns: expected an integer"),
      (#"[1]"#, "json: expected a JSON object"),
    ])
  func badDocuments(json: String, fragment: String) {
    do {
      _ = try ScheduleSpec(json: try JSONValue.parse(Array(json.utf8)))
      Issue.record("decoded \(json)")
    } catch {
      #expect("\(error)".contains(fragment), "\(error)")
    }
  }

  @Test(
    "the reader refuses what is not JSON, saying where",
    arguments: [
      #"{"a":1} x"#, #"{"a":01}"#, #"{"a":1.}"#, #"{"a":-}"#, #"{"a":"\x"}"#, #"{"a":"\ud800"}"#, #"{"a":tru}"#,
      #"{"a" 1}"#, #"{"a":1,}"#, #"["#, #"""#, "{\"a\":\"\u{01}\"}", String(repeating: "[", count: 65) + String(repeating: "]", count: 65),
    ])
  func notJSON(_ text: String) {
    #expect(throws: JSONSyntaxError.self) { try JSONValue.parse(Array(text.utf8)) }
  }

  @Test("strings: every escape, surrogate pairs, and multi-byte UTF-8 round-trip")
  func strings() throws {
    let parsed = try JSONValue.parse(Array(#"["a\"b\\c\/d\n\r\t\b\f", "\u00e9\ud83d\ude00", "é😀", "\u0001"]"#.utf8))
    #expect(parsed == .array([.string("a\"b\\c/d\n\r\t\u{08}\u{0C}"), .string("é😀"), .string("é😀"), .string("\u{01}")]))
    var writer = JSONBytesWriter()
    writer.object { $0.member("s", "q\"\\\n\t\u{01}é/") }
    #expect(String(decoding: writer.bytes, as: UTF8.self) == #"{"s":"q\"\\\n\t\u0001é/"}"#)
    #expect(try JSONValue.parse(writer.bytes)["s"] == .string("q\"\\\n\t\u{01}é/"))
  }
}
