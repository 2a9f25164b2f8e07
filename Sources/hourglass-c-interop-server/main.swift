// hourglass-c-interop-server DIR
//
// A coordinator stand-in for checking non-Swift clients (tools/c-client-check.sh): makes a
// throwaway CA with a server certificate (localhost, 127.0.0.1) and a user certificate
// (alice), writes them to DIR (ca.pem, user.pem, user-key.pem, server.pem, server-key.pem),
// serves the in-memory FakeTaskService over hourglass/1 + TLS on a free loopback port, prints
// "port N" on stdout and runs until SIGTERM or SIGINT.
import Foundation
import HourglassInterop

let arguments = CommandLine.arguments
guard arguments.count == 2 else {
  FileHandle.standardError.write(Data("usage: hourglass-c-interop-server DIR\n".utf8))
  exit(2)
}
let pki = try InteropPKI()
try pki.write(to: arguments[1])
let service = FakeTaskService()
try await InteropServer.runUntilSignalled(router: service.router(), credentials: pki.serverCredentials) { port in
  print("port \(port)")
  fflush(nil)
}
