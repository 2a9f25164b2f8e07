/// `HOST:PORT` text as command lines and profiles write it; IPv6 hosts in brackets (`[::1]:7443`).
public enum HostPort {
  /// Splits `text` at its last colon: the host without brackets (possibly empty, meaning every
  /// address when listening) and a port in 0–65535 (0: any free port when listening).
  public static func parse(_ text: String) -> (host: String, port: Int)? {
    guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65_535).contains(port) else {
      return nil
    }
    var host = String(text[..<colon])
    if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
    return (host, port)
  }

  /// An address a client can dial: a host is named and the port is not 0.
  public static func parseDialable(_ text: String) -> (host: String, port: Int)? {
    guard let parsed = parse(text), !parsed.host.isEmpty, parsed.port != 0 else { return nil }
    return parsed
  }
}
