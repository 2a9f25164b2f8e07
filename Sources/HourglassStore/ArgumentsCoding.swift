import Foundation

/// How both backends store a task's arguments: a JSON array of strings, so the column stays
/// readable with `sqlite3` or `psql`. Encoding is written out by hand because it runs once per
/// inserted task, where a `JSONEncoder` per row cost a noticeable share of the insert path.
public enum ArgumentsCoding {
  /// The JSON array text of `arguments`, as UTF-8.
  public static func encode(_ arguments: [String]) -> [UInt8] {
    var out: [UInt8] = [UInt8(ascii: "[")]
    out.reserveCapacity(arguments.reduce(2) { $0 + $1.utf8.count + 3 })
    let hex = Array("0123456789abcdef".utf8)
    for (index, argument) in arguments.enumerated() {
      if index > 0 { out.append(UInt8(ascii: ",")) }
      out.append(UInt8(ascii: "\""))
      for byte in argument.utf8 {
        switch byte {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"):
          out.append(UInt8(ascii: "\\"))
          out.append(byte)
        case 0..<0x20:
          out.append(contentsOf: Array(#"\u00"#.utf8))
          out.append(hex[Int(byte >> 4)])
          out.append(hex[Int(byte & 0xF)])
        default:
          out.append(byte)
        }
      }
      out.append(UInt8(ascii: "\""))
    }
    out.append(UInt8(ascii: "]"))
    return out
  }

  /// The arguments in a stored JSON array; empty if the text is not one.
  public static func decode(_ bytes: some Collection<UInt8>) -> [String] {
    // Most tasks have no arguments: no decoder for those.
    if bytes.count == 2, bytes.first == UInt8(ascii: "["), bytes.dropFirst().first == UInt8(ascii: "]") { return [] }
    return (try? JSONDecoder().decode([String].self, from: Data(bytes))) ?? []
  }
}
