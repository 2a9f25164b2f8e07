import HourglassCore

/// How both backends store a task's arguments: a JSON array of strings, so the column stays
/// readable with `sqlite3` or `psql`. Written and read with HourglassCore's `JSONBytesWriter` and
/// `JSONValue` rather than Foundation's coders: this runs once per inserted task and once per
/// dispatched run, where a `JSONEncoder` or `JSONDecoder` per row cost a noticeable share.
public enum ArgumentsCoding {
  /// The JSON array text of `arguments`, as UTF-8.
  public static func encode(_ arguments: [String]) -> [UInt8] {
    var writer = JSONBytesWriter()
    writer.array(of: arguments)
    return writer.bytes
  }

  /// The arguments in a stored JSON array; empty if the text is not an array of strings.
  public static func decode(_ bytes: some Collection<UInt8>) -> [String] {
    guard case .array(let values) = try? JSONValue.parse(Array(bytes)) else { return [] }
    let strings = values.compactMap(\.stringValue)
    return strings.count == values.count ? strings : []
  }
}
