package record

import "strconv"

// wellKnown maps "port/proto" to its IANA service name, for the ports that
// containers commonly publish. It is deliberately small: a port it does not
// know simply has no name unless a berth.port.<P>.name label gives one.
var wellKnown = map[string]string{
	"21/tcp": "ftp", "22/tcp": "ssh", "25/tcp": "smtp",
	"53/tcp": "domain", "53/udp": "domain",
	"80/tcp": "http", "110/tcp": "pop3", "123/udp": "ntp", "143/tcp": "imap",
	"389/tcp": "ldap", "443/tcp": "https", "443/udp": "https",
	"465/tcp": "submissions", "587/tcp": "submission", "636/tcp": "ldaps",
	"993/tcp": "imaps", "995/tcp": "pop3s",
	"1883/tcp": "mqtt", "2049/tcp": "nfs", "3306/tcp": "mysql", "3478/udp": "stun",
	"5060/udp": "sip", "5060/tcp": "sip", "5222/tcp": "xmpp-client",
	"5432/tcp": "postgresql", "5672/tcp": "amqp", "6379/tcp": "redis",
	"8080/tcp": "http-alt", "8883/tcp": "secure-mqtt", "11211/tcp": "memcache",
	"27017/tcp": "mongodb",
}

// PortName is the IANA service name of port/proto, or "" where the built-in
// table does not know it.
func PortName(port int, proto string) string {
	return wellKnown[strconv.Itoa(port)+"/"+proto]
}
