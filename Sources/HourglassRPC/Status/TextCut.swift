/// Text cut to a number of UTF-8 bytes, for fields whose size is bounded on the wire or in a
/// store (status messages, a run's error).
public enum TextCut {
  /// `text` unchanged if it fits in `limit` UTF-8 bytes; else its longest prefix that ends at a
  /// Unicode scalar boundary and, followed by "…", fits.
  public static func cut(_ text: String, toUTF8Bytes limit: Int) -> String {
    guard text.utf8.count > limit else { return text }
    let marker = "…"
    var end = text.utf8.index(text.utf8.startIndex, offsetBy: max(0, limit - marker.utf8.count))
    while end > text.utf8.startIndex && end.samePosition(in: text.unicodeScalars) == nil { text.utf8.formIndex(before: &end) }
    return String(text[..<end]) + marker
  }
}
