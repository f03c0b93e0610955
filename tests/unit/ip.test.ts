// Address parsing, canonical formatting and the endpoint classifiers: IPv4
// against 0.6.0's rules (a table, and a sweep against an oracle of those
// rules), IPv6 table driven against the IANA special-purpose registries.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { createNetworkEndpoint, parseEndpointSpec, parseResolverSpec } from "../../src/endpoint.js";
import { formatIpAddress, parseIpAddress, type AddressClass } from "../../src/ip.js";

type Row = readonly [ip: string, classes: readonly AddressClass[], why: string];

const IPV4: readonly Row[] = [
  ["0.0.0.0", ["reserved"], "this host (RFC 1122)"],
  ["0.1.2.3", ["reserved"], "this network (RFC 791)"],
  ["10.0.0.1", ["private"], "RFC 1918"],
  ["10.255.255.255", ["private"], "RFC 1918"],
  ["100.64.0.1", ["reserved"], "shared address space (RFC 6598)"],
  ["100.127.255.255", ["reserved"], "shared address space (RFC 6598)"],
  ["100.128.0.1", ["global"], "just past RFC 6598"],
  ["127.0.0.1", ["loopback"], "RFC 1122"],
  ["127.255.255.254", ["loopback"], "RFC 1122"],
  ["169.254.169.254", ["link-local"], "RFC 3927 (cloud metadata)"],
  ["172.15.255.255", ["global"], "just before RFC 1918 172.16/12"],
  ["172.16.0.1", ["private"], "RFC 1918"],
  ["172.31.255.255", ["private"], "RFC 1918"],
  ["172.32.0.1", ["global"], "just past RFC 1918 172.16/12"],
  ["192.0.0.1", ["reserved"], "IETF protocol assignments (RFC 6890)"],
  ["192.0.0.8", ["reserved"], "IPv4 dummy address (RFC 7600)"],
  ["192.0.0.9", ["reserved"], "PCP anycast (RFC 7723), inside 192.0.0.0/24 as in 0.6.0"],
  ["192.0.0.10", ["reserved"], "TURN anycast (RFC 8155), inside 192.0.0.0/24 as in 0.6.0"],
  ["192.0.0.170", ["reserved"], "NAT64 discovery (RFC 7050)"],
  ["192.0.2.1", ["documentation", "reserved"], "TEST-NET-1 (RFC 5737)"],
  ["192.31.196.1", ["global"], "AS112-v4 (RFC 7535)"],
  ["192.52.193.1", ["global"], "AMT (RFC 7450)"],
  ["192.88.99.1", ["reserved"], "deprecated 6to4 relay anycast (RFC 7526)"],
  ["192.168.1.1", ["private"], "RFC 1918"],
  ["192.175.48.1", ["global"], "AS112 direct delegation (RFC 7534)"],
  ["198.18.0.1", ["reserved"], "benchmarking (RFC 2544)"],
  ["198.19.255.255", ["reserved"], "benchmarking (RFC 2544)"],
  ["198.20.0.1", ["global"], "just past benchmarking"],
  ["198.51.100.7", ["documentation", "reserved"], "TEST-NET-2 (RFC 5737)"],
  ["203.0.113.9", ["documentation", "reserved"], "TEST-NET-3 (RFC 5737)"],
  ["224.0.0.251", ["multicast"], "mDNS (RFC 5771)"],
  ["233.252.0.1", ["multicast"], "MCAST-TEST-NET (RFC 6676), not documentation in 0.6.0"],
  ["239.255.255.255", ["multicast"], "RFC 5771"],
  ["240.0.0.1", ["reserved"], "future use (RFC 1112)"],
  ["255.255.255.254", ["reserved"], "future use (RFC 1112)"],
  ["255.255.255.255", ["broadcast", "reserved"], "limited broadcast (RFC 919), inside 240/4"],
  ["1.1.1.1", ["global"], "public"],
  ["8.8.8.8", ["global"], "public"],
];

const IPV6: readonly Row[] = [
  ["::", ["reserved"], "unspecified (RFC 4291)"],
  ["::1", ["loopback"], "RFC 4291"],
  ["::ffff:127.0.0.1", ["loopback"], "IPv4-mapped loopback dials 127.0.0.1"],
  ["::ffff:10.1.2.3", ["private"], "IPv4-mapped RFC 1918"],
  ["::ffff:8.8.8.8", ["global"], "IPv4-mapped public"],
  ["::127.0.0.1", ["reserved"], "deprecated IPv4-compatible"],
  ["64:ff9b::808:808", ["global"], "NAT64 (RFC 6052) of public 8.8.8.8"],
  ["64:ff9b::a9fe:a9fe", ["link-local"], "NAT64 of 169.254.169.254: the cloud metadata service"],
  ["64:ff9b::10.1.2.3", ["private"], "NAT64 of RFC 1918"],
  ["64:ff9b::7f00:1", ["loopback"], "NAT64 of 127.0.0.1"],
  ["64:ff9b::c000:201", ["documentation", "reserved"], "NAT64 of TEST-NET-1"],
  ["64:ff9b::6440:1", ["reserved"], "NAT64 of shared address space"],
  ["64:ff9b:1::1", ["reserved"], "local-use translation (RFC 8215)"],
  ["100::1", ["reserved"], "discard-only (RFC 6666)"],
  ["2001::1", ["reserved"], "Teredo (RFC 4380), reachability N/A"],
  ["2001:1::1", ["global"], "PCP anycast (RFC 7723)"],
  ["2001:1::2", ["global"], "TURN anycast (RFC 8155)"],
  ["2001:1::3", ["global"], "DNS-SD SRP anycast (RFC 9665)"],
  ["2001:1::4", ["reserved"], "IETF protocol assignments (RFC 2928)"],
  ["2001:2::1", ["reserved"], "benchmarking (RFC 5180)"],
  ["2001:3::1", ["global"], "AMT (RFC 7450)"],
  ["2001:4:112::1", ["global"], "AS112-v6 (RFC 7535)"],
  ["2001:10::1", ["reserved"], "deprecated ORCHID (RFC 4843)"],
  ["2001:20::1", ["global"], "ORCHIDv2 (RFC 7343)"],
  ["2001:30::1", ["global"], "drone remote ID (RFC 9374)"],
  ["2001:200::1", ["global"], "just past 2001::/23"],
  ["2001:db8::1", ["documentation"], "RFC 3849"],
  ["2002:c000:204::1", ["reserved"], "6to4 (RFC 3056), reachability N/A"],
  ["2606:4700:4700::1111", ["global"], "public"],
  ["2620:4f:8000::1", ["global"], "AS112 direct delegation (RFC 7534)"],
  ["3fff::1", ["documentation"], "RFC 9637"],
  ["3fff:fff::1", ["documentation"], "RFC 9637 (end of the /20)"],
  ["3fff:1000::1", ["global"], "just past 3fff::/20"],
  ["4000::1", ["reserved"], "outside global unicast 2000::/3"],
  ["5f00::1", ["reserved"], "SRv6 SIDs (RFC 9602)"],
  ["fc00::1", ["private"], "unique local (RFC 4193)"],
  ["fd12:3456::1", ["private"], "unique local (RFC 4193)"],
  ["fe80::1", ["link-local"], "RFC 4291"],
  ["febf::1", ["link-local"], "end of fe80::/10"],
  ["fec0::1", ["reserved"], "deprecated site-local (RFC 3879)"],
  ["ff02::1", ["multicast"], "RFC 4291"],
];

const CLASSIFIERS = {
  loopback: "isLoopback",
  private: "isPrivate",
  "link-local": "isLinkLocal",
  multicast: "isMulticast",
  broadcast: "isBroadcast",
  documentation: "isDocumentation",
  reserved: "isReserved",
  global: "isPublicInternet",
} as const;

describe("endpoint classifiers", () => {
  for (const [family, rows] of [["IPv4", IPV4], ["IPv6", IPV6]] as const) {
    test(`${family}: every classifier, per registry row`, () => {
      for (const [ip, classes, why] of rows) {
        const address = parseIpAddress(ip);
        assert.ok(address, `${ip} parses`);
        const endpoint = createNetworkEndpoint(address, 443);
        for (const [name, method] of Object.entries(CLASSIFIERS)) {
          assert.equal(endpoint[method](), classes.includes(name as AddressClass), `${ip} ${method}() (${why})`);
        }
      }
    });
  }
});

/**
 * 0.6.0's IPv4 classifiers, restated from its rules (src/index.ts at v0.6.0)
 * as predicates on the four octets: the oracle the sweep below compares with.
 */
function oracle060(a: number, b: number, c: number, d: number): Record<AddressClass, boolean> {
  const documentation = (a === 192 && b === 0 && c === 2) || (a === 198 && b === 51 && c === 100)
    || (a === 203 && b === 0 && c === 113);
  const broadcast = a === 255 && b === 255 && c === 255 && d === 255;
  const classes = {
    loopback: a === 127,
    private: a === 10 || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168),
    "link-local": a === 169 && b === 254,
    multicast: a >= 224 && a <= 239,
    broadcast,
    documentation,
    reserved: a === 0 || (a === 100 && b >= 64 && b <= 127) || (a === 192 && b === 0 && c === 0)
      || (a === 192 && b === 88 && c === 99) || (a === 198 && (b === 18 || b === 19)) || a >= 240 || documentation,
  };
  return { ...classes, global: !Object.values(classes).some(Boolean) };
}

describe("IPv4 classifiers agree with 0.6.0", () => {
  test("every a.b at the edges of its /16, and every address edge in the /16s where the third octet matters", () => {
    const addresses: [number, number, number, number][] = [];
    for (let a = 0; a < 256; a += 1) {
      for (let b = 0; b < 256; b += 1) {
        for (const [c, d] of [[0, 0], [0, 1], [255, 254], [255, 255]] as const) addresses.push([a, b, c, d]);
      }
    }
    // 0.6.0's /24 rules: 192.0.0/24, 192.0.2/24, 192.88.99/24, 198.51.100/24, 203.0.113/24; and the broadcast /32.
    for (const [a, b] of [[192, 0], [192, 88], [198, 51], [203, 0], [255, 255]] as const) {
      for (let c = 0; c < 256; c += 1) {
        for (const d of [0, 1, 8, 9, 10, 11, 254, 255]) addresses.push([a, b, c, d]);
      }
    }
    for (const [a, b, c, d] of addresses) {
      const ip = `${a}.${b}.${c}.${d}`;
      const endpoint = createNetworkEndpoint(parseIpAddress(ip) as NonNullable<ReturnType<typeof parseIpAddress>>, 80);
      const want = oracle060(a, b, c, d);
      for (const [name, method] of Object.entries(CLASSIFIERS)) {
        if (endpoint[method]() !== want[name as AddressClass]) {
          assert.fail(`${ip} ${method}() = ${endpoint[method]()}, 0.6.0 said ${want[name as AddressClass]}`);
        }
      }
    }
  });
});

describe("address text", () => {
  test("canonical formatting follows RFC 5952", () => {
    const cases: [string, string][] = [
      ["2001:DB8:0:0:0:0:0:1", "2001:db8::1"],
      ["2001:0db8:0000:0000:0001:0000:0000:0001", "2001:db8::1:0:0:1"],
      ["2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"],
      ["2001:db8:0:0:1:0:0:0", "2001:db8:0:0:1::"],
      ["0:0:0:0:0:0:0:0", "::"],
      ["1::", "1::"],
      ["::FFFF:C000:0201", "::ffff:192.0.2.1"],
      ["::1.2.3.4", "::102:304"],
      ["1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:102:304"],
      ["192.0.2.1", "192.0.2.1"],
    ];
    for (const [input, expected] of cases) {
      const address = parseIpAddress(input);
      assert.ok(address, input);
      assert.equal(formatIpAddress(address), expected, input);
    }
  });

  test("malformed addresses are refused", () => {
    for (const input of [
      "", "1.2.3", "256.1.1.1", "01.2.3.4", "1.2.3.4.5", "1.2.3.-1", " 1.2.3.4",
      "1:2:3:4:5:6:7:8:9", "1::2::3", ":::", "fe80::1%eth0", "1:2:3:4:5:6:7::8",
      "::ffff:1.2.3", "g::1", "12345::1", "1.2.3.4:80", ":1::", "1:", "1.2.3.4::",
    ]) {
      assert.equal(parseIpAddress(input), undefined, JSON.stringify(input));
    }
  });

  test("endpoint specs need an IP and a port; IPv6 in brackets; others match nothing", () => {
    const text = (spec: Parameters<typeof parseEndpointSpec>[0]) => {
      const parsed = parseEndpointSpec(spec);
      return parsed === undefined ? undefined : `${formatIpAddress(parsed.address)} ${parsed.port}`;
    };
    assert.equal(text("203.0.113.10:5432"), "203.0.113.10 5432");
    assert.equal(text("[2001:DB8::1]:443"), "2001:db8::1 443");
    assert.equal(text({ ip: "2001:db8::1", port: 53 }), "2001:db8::1 53");
    for (const none of ["2001:db8::1:443", "example.test:80", "1.2.3.4:0", "1.2.3.4:65536", "[1.2.3.4]:80", { ip: "1.2.3.4" }]) {
      assert.equal(text(none as never), undefined, JSON.stringify(none));
    }
    // No port separator at all is an error, as 0.6.0's "must include a port".
    for (const bad of ["203.0.113.10", 42, null]) {
      assert.throws(() => parseEndpointSpec(bad as never), /invalid endpoint spec/, JSON.stringify(bad));
    }
  });

  test("resolver specs default to port 53; a hostname is no resolver", () => {
    assert.deepEqual(parseResolverSpec("192.0.2.53"), { ip: "192.0.2.53", port: 53 });
    assert.deepEqual(parseResolverSpec("192.0.2.53:5353"), { ip: "192.0.2.53", port: 5353 });
    assert.deepEqual(parseResolverSpec("2001:db8::53"), { ip: "2001:db8::53", port: 53 });
    assert.deepEqual(parseResolverSpec("[2001:db8::53]:853"), { ip: "2001:db8::53", port: 853 });
    assert.deepEqual(parseResolverSpec({ ip: "::1" }), { ip: "::1", port: 53 });
    for (const none of ["dns.example.test", "192.0.2.53:", "[::1", { ip: "192.0.2.53", port: 0 }]) {
      assert.equal(parseResolverSpec(none), undefined, JSON.stringify(none));
    }
    for (const bad of [53, null, undefined]) {
      assert.throws(() => parseResolverSpec(bad as never), /invalid DNS resolver/, JSON.stringify(bad));
    }
  });
});
