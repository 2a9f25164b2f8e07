import Foundation
import NIOCore
import NIOPosix

/// One HTTP/1.1 exchange over a plain socket, read until the server closes: enough to scrape
/// the metrics listener the way Prometheus does, without an HTTP client library.
struct HTTPScrape {
  var status: Int
  var headers: [String: String]
  var body: String

  static func request(_ path: String, method: String = "GET", port: Int) async throws -> HTTPScrape {
    let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: port) { channel in
      channel.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel) }
    }
    let raw = try await channel.executeThenClose { inbound, outbound in
      try await outbound.write(ByteBuffer(string: "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/plain\r\n\r\n"))
      var all = ByteBuffer()
      for try await var chunk in inbound { all.writeBuffer(&chunk) }
      return String(buffer: all)
    }
    guard let split = raw.range(of: "\r\n\r\n") else { throw HTTPScrapeError(raw: raw) }
    let lines = raw[..<split.lowerBound].components(separatedBy: "\r\n")
    let statusParts = lines[0].split(separator: " ")
    guard statusParts.count >= 2, let status = Int(statusParts[1]) else { throw HTTPScrapeError(raw: raw) }
    var headers: [String: String] = [:]
    for line in lines.dropFirst() {
      guard let colon = line.firstIndex(of: ":") else { throw HTTPScrapeError(raw: raw) }
      headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
    }
    let body = String(raw[split.upperBound...])
    if let length = headers["content-length"].flatMap(Int.init), length != body.utf8.count { throw HTTPScrapeError(raw: raw) }
    return HTTPScrape(status: status, headers: headers, body: body)
  }
}

struct HTTPScrapeError: Error, CustomStringConvertible {
  var raw: String
  var description: String { "not an HTTP response: \(raw.prefix(200))" }
}
