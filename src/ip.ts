// IP address parsing, canonical formatting and classification.
//
// IPv4 is classified exactly as @torkbot/sandbox 0.6.0 did, so that a policy
// written for it decides the same for every IPv4 address: its ranges are a
// subset of the IANA IPv4 Special-Purpose Address Registry (RFC 6890), the
// documentation ranges and 255.255.255.255 are also reserved, and all of
// 192.0.0.0/24 is reserved (0.6.0 did not single out the globally reachable
// 192.0.0.9 and 192.0.0.10). IPv6 follows the IANA IPv6 Special-Purpose
// Address Registry plus the IPv6 Address Space registry (only 2000::/3 is
// allocated as global unicast; the rest is reserved by the IETF).
// Each address gets the flags of the longest registry prefix that contains it,
// so a globally reachable prefix inside a non-global one (2001:3::/32 in
// 2001::/23) is global. IPv6 entries whose global reachability is "N/A"
// (Teredo, 6to4, ORCHID) are treated as reserved: a policy must not mistake
// them for the open internet. IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are what the host
// dials as IPv4, so they are classified and compared as that IPv4 address.
// NAT64 addresses (64:ff9b::a.b.c.d, RFC 6052) reach a.b.c.d through a
// translator, so they are classified as that IPv4 address (64:ff9b::a9fe:a9fe
// is link-local, as 169.254.169.254 is), but compared as themselves: they are
// another destination to dial.

export interface IpAddress {
  readonly family: 4 | 6;
  /** The address as an unsigned integer: 32 bits for IPv4, 128 for IPv6. */
  readonly value: bigint;
}

export type AddressClass =
  | "loopback"
  | "private"
  | "link-local"
  | "multicast"
  | "broadcast"
  | "documentation"
  | "reserved"
  | "global";

const IPV4_OCTET = /^(?:0|[1-9][0-9]{0,2})$/;
const IPV6_GROUP = /^[0-9a-fA-F]{1,4}$/;
const IPV4_MAPPED_PREFIX = 0xffffn;
/** 64:ff9b::/96, the well-known NAT64 prefix, shifted right by 32 bits. */
const NAT64_PREFIX = 0x0064ff9b0000000000000000n;

export function parseIpAddress(text: string): IpAddress | undefined {
  const family = text.includes(":") ? 6 : 4;
  const value = family === 6 ? parseIpv6(text) : parseIpv4(text);
  return value === undefined ? undefined : { family, value };
}

function parseIpv4(text: string): bigint | undefined {
  const parts = text.split(".");
  if (parts.length !== 4) return undefined;
  let value = 0n;
  for (const part of parts) {
    if (!IPV4_OCTET.test(part) || Number(part) > 255) return undefined;
    value = (value << 8n) | BigInt(part);
  }
  return value;
}

function parseIpv6(text: string): bigint | undefined {
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const compressed = halves.length === 2;
  const head = parseIpv6Groups(halves[0] ?? "", !compressed);
  const tail = compressed ? parseIpv6Groups(halves[1] ?? "", true) : [];
  if (head === undefined || tail === undefined) return undefined;
  const missing = 8 - head.length - tail.length;
  if (compressed ? missing < 1 : missing !== 0) return undefined;
  const groups = [...head, ...new Array<number>(missing).fill(0), ...tail];
  return groups.reduce((value, group) => (value << 16n) | BigInt(group), 0n);
}

/** Groups of one side of "::"; only the address's last group may be dotted IPv4. */
function parseIpv6Groups(text: string, mayEndInIpv4: boolean): number[] | undefined {
  if (text === "") return [];
  const parts = text.split(":");
  const groups: number[] = [];
  for (const [index, part] of parts.entries()) {
    if (mayEndInIpv4 && index === parts.length - 1 && part.includes(".")) {
      const ipv4 = parseIpv4(part);
      if (ipv4 === undefined) return undefined;
      groups.push(Number(ipv4 >> 16n), Number(ipv4 & 0xffffn));
    } else if (IPV6_GROUP.test(part)) {
      groups.push(Number.parseInt(part, 16));
    } else {
      return undefined;
    }
  }
  return groups;
}

/** Canonical text: dotted quad, or RFC 5952 for IPv6 (::ffff:a.b.c.d for mapped). */
export function formatIpAddress(address: IpAddress): string {
  if (address.family === 4) return formatIpv4(address.value);
  if (address.value >> 32n === IPV4_MAPPED_PREFIX) {
    return `::ffff:${formatIpv4(address.value & 0xffffffffn)}`;
  }
  const groups = Array.from({ length: 8 }, (_, index) =>
    Number((address.value >> BigInt(16 * (7 - index))) & 0xffffn));
  const zeros = longestZeroRun(groups);
  const text = (slice: number[]) => slice.map((group) => group.toString(16)).join(":");
  if (zeros.length < 2) return text(groups);
  return `${text(groups.slice(0, zeros.start))}::${text(groups.slice(zeros.start + zeros.length))}`;
}

function formatIpv4(value: bigint): string {
  return [24n, 16n, 8n, 0n].map((shift) => String((value >> shift) & 0xffn)).join(".");
}

function longestZeroRun(groups: readonly number[]): { start: number; length: number } {
  let best = { start: 0, length: 0 };
  let start = -1;
  for (let index = 0; index <= groups.length; index += 1) {
    if (index < groups.length && groups[index] === 0) {
      if (start < 0) start = index;
    } else if (start >= 0) {
      if (index - start > best.length) best = { start, length: index - start };
      start = -1;
    }
  }
  return best;
}

/** The address the host would actually dial: IPv4-mapped IPv6 becomes IPv4. */
function effectiveAddress(address: IpAddress): IpAddress {
  if (address.family === 6 && address.value >> 32n === IPV4_MAPPED_PREFIX) {
    return { family: 4, value: address.value & 0xffffffffn };
  }
  return address;
}

export function sameIpAddress(left: IpAddress, right: IpAddress): boolean {
  const a = effectiveAddress(left);
  const b = effectiveAddress(right);
  return a.family === b.family && a.value === b.value;
}

interface RegistryEntry {
  readonly family: 4 | 6;
  readonly network: bigint;
  readonly length: number;
  readonly classes: ReadonlySet<AddressClass>;
}

function entry(cidr: string, ...classes: AddressClass[]): RegistryEntry {
  const [text = "", length = ""] = cidr.split("/");
  const address = parseIpAddress(text);
  if (address === undefined) throw new Error(`bad registry prefix ${cidr}`);
  return { family: address.family, network: address.value, length: Number(length), classes: new Set(classes) };
}

/** Longest prefix wins. The /0 entries give the class of unlisted space. */
const REGISTRY: readonly RegistryEntry[] = [
  entry("0.0.0.0/0", "global"),
  entry("0.0.0.0/8", "reserved"), //              "this network" (RFC 791)
  entry("10.0.0.0/8", "private"), //              RFC 1918
  entry("100.64.0.0/10", "reserved"), //          shared address space (RFC 6598)
  entry("127.0.0.0/8", "loopback"), //            RFC 1122
  entry("169.254.0.0/16", "link-local"), //       RFC 3927
  entry("172.16.0.0/12", "private"), //           RFC 1918
  entry("192.0.0.0/24", "reserved"), //           IETF protocol assignments (RFC 6890), all of it as in 0.6.0
  entry("192.0.2.0/24", "documentation", "reserved"), // TEST-NET-1 (RFC 5737)
  entry("192.88.99.0/24", "reserved"), //         deprecated 6to4 relay anycast (RFC 7526)
  entry("192.168.0.0/16", "private"), //          RFC 1918
  entry("198.18.0.0/15", "reserved"), //          benchmarking (RFC 2544)
  entry("198.51.100.0/24", "documentation", "reserved"), // TEST-NET-2 (RFC 5737)
  entry("203.0.113.0/24", "documentation", "reserved"), // TEST-NET-3 (RFC 5737)
  entry("224.0.0.0/4", "multicast"), //           RFC 5771 (MCAST-TEST-NET is not documentation, as in 0.6.0)
  entry("240.0.0.0/4", "reserved"), //            reserved for future use (RFC 1112)
  entry("255.255.255.255/32", "broadcast", "reserved"), // limited broadcast (RFC 919), inside 240/4

  entry("::/0", "reserved"), //                   reserved by IETF (IPv6 Address Space registry)
  entry("::1/128", "loopback"), //                RFC 4291
  entry("2000::/3", "global"), //                 global unicast (RFC 4291)
  entry("2001::/23", "reserved"), //              IETF protocol assignments (RFC 2928), incl. Teredo, ORCHID
  entry("2001:1::1/128", "global"), //            PCP anycast (RFC 7723)
  entry("2001:1::2/128", "global"), //            TURN anycast (RFC 8155)
  entry("2001:1::3/128", "global"), //            DNS-SD SRP anycast (RFC 9665)
  entry("2001:3::/32", "global"), //              AMT (RFC 7450)
  entry("2001:4:112::/48", "global"), //          AS112-v6 (RFC 7535)
  entry("2001:20::/28", "global"), //             ORCHIDv2 (RFC 7343)
  entry("2001:30::/28", "global"), //             drone remote ID (RFC 9374)
  entry("2001:db8::/32", "documentation"), //     RFC 3849
  entry("2002::/16", "reserved"), //              6to4 (RFC 3056), reachability N/A
  entry("3fff::/20", "documentation"), //         RFC 9637
  entry("5f00::/16", "reserved"), //              SRv6 SIDs (RFC 9602)
  entry("fc00::/7", "private"), //                unique local (RFC 4193)
  entry("fe80::/10", "link-local"), //            RFC 4291
  entry("ff00::/8", "multicast"), //              RFC 4291
];

/**
 * Cloud metadata services outside link-local space: AWS's IPv6 endpoint and
 * Alibaba Cloud's. (169.254.169.254, which most clouds use, is link-local.)
 */
const METADATA_SERVICES: readonly IpAddress[] = [
  { family: 6, value: 0xfd000ec2000000000000000000000254n },
  { family: 4, value: 0x646464c8n },
];

/**
 * Whether a request to this address could reach a cloud metadata service:
 * a link-local address, or one of the services' other addresses, through
 * IPv4-mapped and NAT64 forms too.
 */
export function mayBeMetadataService(address: IpAddress): boolean {
  if (addressClasses(address).has("link-local")) return true;
  const dialled = address.family === 6 && address.value >> 32n === NAT64_PREFIX
    ? { family: 4 as const, value: address.value & 0xffffffffn }
    : address;
  return METADATA_SERVICES.some((service) => sameIpAddress(service, dialled));
}

export function addressClasses(address: IpAddress): ReadonlySet<AddressClass> {
  if (address.family === 6 && address.value >> 32n === NAT64_PREFIX) {
    // IPv4/IPv6 translation (RFC 6052): the class of the IPv4 destination.
    return addressClasses({ family: 4, value: address.value & 0xffffffffn });
  }
  const effective = effectiveAddress(address);
  const bits = effective.family === 4 ? 32 : 128;
  let best: RegistryEntry | undefined;
  for (const candidate of REGISTRY) {
    if (candidate.family !== effective.family) continue;
    if (best !== undefined && candidate.length <= best.length) continue;
    const shift = BigInt(bits - candidate.length);
    if (effective.value >> shift === candidate.network >> shift) best = candidate;
  }
  // Every family has a /0 entry, so a match always exists.
  return best?.classes ?? new Set<AddressClass>(["reserved"]);
}
