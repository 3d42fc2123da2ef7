//go:build vmguest

package kernel

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	utilexec "k8s.io/utils/exec"

	"github.com/nvmirror/nvmirror/pkg/dhchap"
	"github.com/nvmirror/nvmirror/pkg/mdraid"
	"github.com/nvmirror/nvmirror/pkg/nvmeof"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/host"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/nvmet"
)

// NVMe in-band authentication (DH-HMAC-CHAP) on the real kernel: these run
// in the 6.12 boot (TestRealKernelAuth), Debian 6.1 having no
// authentication. In this VM every storage node is the same nvmet, so a
// host's secrets (kept on nvmet's global host entry) are the same for all
// of them; on real storage nodes each has its own.

// kmsgTail reads the kernel messages logged after it was opened.
type kmsgTail struct{ fd int }

func openKmsgTail(t *testing.T) *kmsgTail {
	t.Helper()
	// Raw syscalls: a non-blocking os.File would park the read in the
	// poller instead of returning EAGAIN at the end of the log.
	fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatalf("open /dev/kmsg: %v", err)
	}
	if _, err := unix.Seek(fd, 0, io.SeekEnd); err != nil {
		t.Fatalf("seek /dev/kmsg: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return &kmsgTail{fd: fd}
}

// lines returns the messages logged since the last call.
func (k *kmsgTail) lines() []string {
	var out []string
	buf := make([]byte, 8192)
	for {
		n, err := unix.Read(k.fd, buf)
		if errors.Is(err, unix.EPIPE) {
			continue
		}
		if err != nil || n <= 0 {
			return out
		}
		rec := string(buf[:n])
		if i := strings.IndexByte(rec, ';'); i >= 0 {
			rec = rec[i+1:]
		}
		out = append(out, strings.TrimSpace(strings.SplitN(rec, "\n", 2)[0]))
	}
}

// relevant keeps the authentication and connection lines (the partition
// scan of a disconnected namespace is noise here).
func relevant(lines []string) []string {
	var out []string
	for _, l := range lines {
		if strings.Contains(l, "nvme") && !strings.Contains(l, "Buffer I/O error") && !strings.Contains(l, "no available path") &&
			!strings.Contains(l, "unable to read") && !strings.Contains(l, "callbacks suppressed") {
			out = append(out, l)
		}
	}
	return out
}

func (k *kmsgTail) logSince(t *testing.T, what string) []string {
	t.Helper()
	l := relevant(k.lines())
	t.Logf("kernel log, %s:\n    %s", what, strings.Join(l, "\n    "))
	return l
}

func hasLine(lines []string, sub string) bool {
	return slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, sub) })
}

// rawFabricsWrite writes opts to /dev/nvme-fabrics as they are, bypassing
// nvmeof's validation, to see what the kernel itself accepts; it returns
// the new controller's name.
func rawFabricsWrite(opts string) (string, error) {
	f, err := os.OpenFile("/dev/nvme-fabrics", os.O_RDWR, 0)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if _, err := f.Write([]byte(opts)); err != nil {
		return "", err
	}
	buf := make([]byte, 128)
	n, _ := f.Read(buf)
	var inst, cntlid int
	if _, err := fmt.Sscanf(string(buf[:n]), "instance=%d,cntlid=%d", &inst, &cntlid); err != nil {
		return "", fmt.Errorf("answer %q: %w", buf[:n], err)
	}
	return fmt.Sprintf("nvme%d", inst), nil
}

func rawOpts(n storageNode, h hostIdentity, extra string) string {
	return fmt.Sprintf("transport=tcp,traddr=%s,trsvcid=%s,nqn=%s,hostnqn=%s,hostid=%s,ctrl_loss_tmo=2,reconnect_delay=1%s",
		n.addr, n.svcID, n.nqn, h.nqn, h.id, extra)
}

func newSecret(t *testing.T) string {
	t.Helper()
	s, err := dhchap.Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func secretOf(t *testing.T, h dhchap.Hash, n int) string {
	t.Helper()
	key := make([]byte, n)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	s, err := dhchap.New(h, key)
	if err != nil {
		t.Fatal(err)
	}
	return s.Encode()
}

// encodeSecret builds a DHHC-1 text from raw parts, valid or not.
func encodeSecret(hh string, key []byte, crc uint32, tail string) string {
	raw := binary.LittleEndian.AppendUint32(bytes.Clone(key), crc)
	return "DHHC-1:" + hh + ":" + base64.StdEncoding.EncodeToString(raw) + tail
}

func randomKey(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// startAuthNodes exports count replicas like startStorageNodes, with
// host's DH-HMAC-CHAP settings given to the target BEFORE the host is
// allowed: the order a storage node must follow, so that the host entry
// never exists linked without its secret.
func startAuthNodes(t *testing.T, tgt *nvmet.Target, prefix string, count int, sizeBytes int64, hostIdent hostIdentity, firstPort int, auth nvmet.HostAuth) []storageNode {
	t.Helper()
	if err := tgt.AuthSupported(); err != nil {
		t.Fatalf("AuthSupported on the auth kernel: %v", err)
	}
	if auth.Enabled() {
		if err := tgt.SetHostAuth(hostIdent.nqn, auth); err != nil {
			t.Fatalf("SetHostAuth: %v", err)
		}
	}
	// Registered first, so it runs after startStorageNodes' teardown:
	// Teardown keeps nothing unreferenced; clear anyway in case the host
	// entry is still linked somewhere.
	t.Cleanup(func() {
		if err := tgt.SetHostAuth(hostIdent.nqn, nvmet.HostAuth{}); err != nil {
			t.Errorf("clearing the host's secrets: %v", err)
		}
	})
	return startStorageNodes(t, tgt, prefix, count, sizeBytes, hostIdent, firstPort)
}

func (n storageNode) authOptions(h hostIdentity, secret, ctrlSecret string) host.ConnectOptions {
	o := n.connectOptions(h)
	o.DHCHAPSecret, o.DHCHAPCtrlSecret = secret, ctrlSecret
	return o
}

func disconnectAll(t *testing.T, ini *host.Initiator, nqn string) {
	t.Helper()
	if err := ini.DisconnectNQN(ctxTimeout(t, 60*time.Second), nqn); err != nil {
		t.Errorf("disconnect %s: %v", nqn, err)
	}
}

// requireNoController fails when a refused connect left a controller.
func requireNoController(t *testing.T, ini *host.Initiator, nqn string) {
	t.Helper()
	cs, err := ini.ControllersFor(nqn)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 0 {
		t.Errorf("a refused connect left controllers: %+v", cs)
	}
}

// adminTimeoutParam is nvme_core's admin command timeout (seconds),
// writable at runtime and read when a controller is created.
const adminTimeoutParam = "/sys/module/nvme_core/parameters/admin_timeout"

// shortAdminTimeout lowers nvme_core's admin command timeout (60 s) for
// the controllers the test creates. Seen on 6.12: when authentication
// fails, the target declares a fatal error and drops the association while
// the host still waits for the answer to its last authentication command
// (AUTH_Send: failure2 or the reply to failure1); the host only gives up
// at that command's timeout, so a refused connect (or a reconnect after a
// failed re-authentication) sometimes blocks the fabrics write for the
// full admin timeout instead of failing at once. 10 s keeps such refusals
// short; loopback admin commands take milliseconds even under TCG.
func shortAdminTimeout(t *testing.T) {
	t.Helper()
	old, err := os.ReadFile(adminTimeoutParam)
	if err != nil {
		t.Logf("cannot read %s (%v): refused connects may take 60 s", adminTimeoutParam, err)
		return
	}
	if err := os.WriteFile(adminTimeoutParam, []byte("10"), 0); err != nil {
		t.Logf("cannot lower %s (%v): refused connects may take 60 s", adminTimeoutParam, err)
		return
	}
	t.Cleanup(func() {
		if err := os.WriteFile(adminTimeoutParam, bytes.TrimSpace(old), 0); err != nil {
			t.Errorf("restoring %s: %v", adminTimeoutParam, err)
		}
	})
}

// refusedConnect connects with o, which must fail, and reports how long
// the kernel took to refuse.
func refusedConnect(t *testing.T, ini *host.Initiator, o host.ConnectOptions, what string) error {
	t.Helper()
	start := time.Now()
	_, err := ini.Connect(ctxTimeout(t, 90*time.Second), o)
	t.Logf("%s: refused after %v: errno %d (%v)", what, time.Since(start).Round(time.Millisecond), int(errnoOf(err)), errnoOf(err))
	if err == nil {
		t.Fatalf("%s: connected", what)
	}
	requireNoController(t, ini, o.SubsysNQN)
	return err
}

func errnoOf(err error) syscall.Errno {
	var e syscall.Errno
	errors.As(err, &e)
	return e
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// TestAuthKeyFormatMatchesKernel cross-checks pkg/dhchap with the kernel.
// Every secret Parse accepts works on both sides: the host's fabrics write
// takes it, and as a target's key it authenticates a host holding it.
// Every variant the kernel refuses, Parse refuses too. The kernel is more
// lenient than Parse in a few ways (logged): Parse refuses those on
// purpose, nvme-cli's check-dhchap-key refuses them too, and the data path
// hands the kernel only Parse's canonical text.
func TestAuthKeyFormatMatchesKernel(t *testing.T) {
	tgt := nvmet.NewTarget("")
	ini := host.NewInitiator("")
	hostIdent := newHostIdentity(t, 61)
	nodes := startAuthNodes(t, tgt, "akf", 1, 16<<20, hostIdent, 61, nvmet.HostAuth{})
	n := nodes[0]
	k := openKmsgTail(t)

	// Host side, against a target that does not ask for authentication:
	// the fabrics write succeeds exactly when the host kernel parsed the
	// secret (it parses it when the controller is created).
	hostAccepts := func(s string) (bool, error) {
		c, err := rawFabricsWrite(rawOpts(n, hostIdent, ",dhchap_secret="+s))
		if err != nil {
			return false, err
		}
		disconnectAll(t, ini, n.nqn)
		_ = c
		return true, nil
	}
	valid := map[string]string{
		"generated":             newSecret(t),
		"00, 32 bytes":          secretOf(t, dhchap.HashNone, 32),
		"00, 48 bytes (padded)": secretOf(t, dhchap.HashNone, 48),
		"00, 64 bytes (padded)": secretOf(t, dhchap.HashNone, 64),
		"01 (SHA-256), 32":      secretOf(t, dhchap.HashSHA256, 32),
		"02 (SHA-384), 48":      secretOf(t, dhchap.HashSHA384, 48),
		"03 (SHA-512), 64":      secretOf(t, dhchap.HashSHA512, 64),
	}
	for name, s := range valid {
		if err := dhchap.Validate(s); err != nil {
			t.Fatalf("%s: Parse = %v", name, err)
		}
		if ok, err := hostAccepts(s); !ok {
			t.Errorf("%s: Parse accepts it, the host kernel refuses it: %v", name, err)
		}
	}

	key32, key48 := randomKey(t, 32), randomKey(t, 48)
	crc32k := crc32.ChecksumIEEE(key32)
	good32 := encodeSecret("00", key32, crc32k, ":")
	b64 := strings.TrimSuffix(good32[10:], ":")
	good48 := encodeSecret("00", key48, crc32.ChecksumIEEE(key48), ":")
	b64of48 := strings.TrimSuffix(good48[10:], ":")
	variants := map[string]string{
		"CRC wrong":             encodeSecret("00", key32, crc32k^0x00ff0000, ":"),
		"CRC big endian":        encodeSecret("00", key32, bits32Swap(crc32k), ":"),
		"31-byte key":           encodeSecret("00", key32[:31], crc32.ChecksumIEEE(key32[:31]), ":"),
		"33-byte key":           encodeSecret("00", append(key32, 1), crc32.ChecksumIEEE(append(key32, 1)), ":"),
		"empty key":             "DHHC-1:00::",
		"non-base64 character":  "DHHC-1:00:*" + b64[1:] + ":",
		"padding inside":        "DHHC-1:00:" + b64[:8] + "=" + b64[9:] + ":",
		"one-digit hash":        "DHHC-1:0:" + b64 + ":",
		"lowercase prefix":      "dhhc-1:00:" + b64 + ":",
		"hash 04":               encodeSecret("04", key32, crc32k, ":"),
		"01 with a 48-byte key": encodeSecret("01", key48, crc32.ChecksumIEEE(key48), ":"),
		"03 with a 32-byte key": encodeSecret("03", key32, crc32k, ":"),
		"unpadded base64":       "DHHC-1:00:" + strings.TrimRight(b64of48, "=") + ":",
		"no trailing colon":     "DHHC-1:00:" + b64,
		"text after the colon":  good32 + "xyz",
	}
	var lenient []string
	names := make([]string, 0, len(variants))
	for name := range variants {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		s := variants[name]
		parseErr := dhchap.Validate(s)
		if parseErr == nil {
			t.Errorf("%s: Parse accepts it", name)
			continue
		}
		ok, err := hostAccepts(s)
		if ok {
			lenient = append(lenient, name)
			t.Logf("host kernel accepts %-22s Parse refuses: %v", name+":", parseErr)
		} else {
			t.Logf("host kernel refuses %-22s errno %d (%v); Parse: %v", name+":", int(errnoOf(err)), err, parseErr)
		}
	}
	t.Logf("kernel leniencies Parse does not share: %s", strings.Join(lenient, "; "))
	lines := k.logSince(t, "host-side key parsing")
	// The kernel quotes a secret it cannot parse the prefix of: one more
	// reason never to hand it anything but Parse's canonical text.
	if hasLine(lines, "Invalid DH-CHAP secret") {
		t.Logf("note: the kernel logged a malformed secret verbatim (nvme_fabrics: Invalid DH-CHAP secret ...)")
	}

	// Target side: each valid secret as the target's key authenticates a
	// host holding it, through nvmeof on both ends.
	for name, s := range valid {
		if err := tgt.SetHostAuth(hostIdent.nqn, nvmet.HostAuth{Secret: s}); err != nil {
			t.Fatalf("%s: SetHostAuth = %v", name, err)
		}
		c, err := ini.Connect(ctxTimeout(t, 60*time.Second), n.authOptions(hostIdent, s, ""))
		if err != nil {
			t.Errorf("%s: target key refused: %v", name, err)
			continue
		}
		disconnectAll(t, ini, n.nqn)
		_ = c
	}
	lines = k.logSince(t, "target-side keys")
	if got := strings.Count(strings.Join(lines, "\n"), "qid 0: authenticated with hash"); got != len(valid) {
		t.Errorf("%d authentications logged, want %d", got, len(valid))
	}
	// configfs itself only checks "DHHC-1:<hh>:" with hh 0-3: a broken key
	// is stored and fails every connect with EIO. SetHostAuth validates.
	hk := filepath.Join(nvmet.DefaultRoot, "hosts", hostIdent.nqn, "dhchap_key")
	if err := os.WriteFile(hk, []byte(variants["CRC wrong"]), 0); err != nil {
		t.Errorf("configfs refused a key with a bad CRC: %v (it used not to check)", err)
	} else {
		_, err := ini.Connect(ctxTimeout(t, 60*time.Second), n.authOptions(hostIdent, good32, ""))
		t.Logf("target configured with a bad-CRC key: connect = %v (errno %d)", err, int(errnoOf(err)))
		if err == nil {
			t.Error("a target with a corrupt key admitted a host")
			disconnectAll(t, ini, n.nqn)
		}
	}
	if err := tgt.SetHostAuth(hostIdent.nqn, nvmet.HostAuth{Secret: variants["CRC wrong"]}); !errors.Is(err, nvmeof.ErrInvalidArgument) {
		t.Errorf("SetHostAuth with a bad CRC = %v, want ErrInvalidArgument", err)
	}
	k.logSince(t, "bad target key")
}

func bits32Swap(v uint32) uint32 { return v>>24 | (v>>8)&0xff00 | (v<<8)&0xff0000 | v<<24 }

// TestAuthConnect: the host with the right secret connects and does I/O;
// one claiming the allowed NQN with a wrong secret, or none, is refused by
// the kernel; the target's secrets are what HostAuth reads back; a live
// session survives the target changing the secret; connect times per DH
// group are measured.
func TestAuthConnect(t *testing.T) {
	tgt := nvmet.NewTarget("")
	ini := host.NewInitiator("")
	hostIdent := newHostIdentity(t, 62)
	key := newSecret(t)
	auth := nvmet.HostAuth{Secret: key}
	shortAdminTimeout(t)
	nodes := startAuthNodes(t, tgt, "acn", 1, 64<<20, hostIdent, 62, auth)
	n := nodes[0]
	k := openKmsgTail(t)

	got, err := tgt.HostAuth(hostIdent.nqn)
	if err != nil {
		t.Fatal(err)
	}
	if got.Secret != key || got.CtrlSecret != "" || got.Hash != nvmet.DefaultAuthHash || got.DHGroup != nvmet.DefaultAuthDHGroup {
		t.Errorf("HostAuth = %s, want the secret with hash %s and group %s", got, nvmet.DefaultAuthHash, nvmet.DefaultAuthDHGroup)
	}

	// A wrong secret: the target refuses, nothing is left behind.
	wrong := newSecret(t)
	// EKEYREJECTED, or EIO when the host waited out its admin timeout
	// (see shortAdminTimeout): either way an authentication failure.
	err = refusedConnect(t, ini, n.authOptions(hostIdent, wrong, ""), "wrong secret")
	if !errors.Is(err, nvmeof.ErrAuthFailed) || !errors.Is(err, nvmeof.ErrConnectRefused) ||
		!(errors.Is(err, syscall.EKEYREJECTED) || errors.Is(err, syscall.EIO)) {
		t.Fatalf("wrong secret: %v, want ErrAuthFailed with EKEYREJECTED or EIO", err)
	}
	if strings.Contains(err.Error(), wrong[10:40]) || strings.Contains(err.Error(), key[10:40]) {
		t.Fatalf("error shows a secret: %v", err)
	}
	lines := k.logSince(t, "wrong secret")
	for _, want := range []string{"host response mismatch", "qid 0: authentication failed"} {
		if !hasLine(lines, want) {
			t.Errorf("kernel log lacks %q", want)
		}
	}

	// No secret at all.
	err = refusedConnect(t, ini, n.connectOptions(hostIdent), "no secret")
	if !errors.Is(err, nvmeof.ErrAuthFailed) || !errors.Is(err, syscall.ENOKEY) || !strings.Contains(err.Error(), "no secret was given") {
		t.Fatalf("no secret: %v, want ErrAuthFailed with ENOKEY", err)
	}
	lines = k.logSince(t, "no secret")
	if !hasLine(lines, "qid 0: no key") {
		t.Errorf("kernel log lacks \"qid 0: no key\"")
	}

	// The right secret: connected, authenticated, I/O works.
	c, err := ini.Connect(ctxTimeout(t, 60*time.Second), n.authOptions(hostIdent, key, ""))
	if err != nil {
		t.Fatalf("right secret refused: %v", err)
	}
	t.Cleanup(func() { disconnectAll(t, ini, n.nqn) })
	lines = k.logSince(t, "right secret")
	if !hasLine(lines, c.Name+": qid 0: authenticated with hash hmac(sha256) dhgroup "+nvmet.DefaultAuthDHGroup) {
		t.Errorf("kernel log does not show %s authenticated with %s", c.Name, nvmet.DefaultAuthDHGroup)
	}
	if s, cs, err := ini.ControllerSecrets(c.Name); err != nil || s != key || cs != "" {
		t.Errorf("ControllerSecrets = (%s, %s, %v)", dhchap.Redact(s), dhchap.Redact(cs), err)
	}
	dev, err := ini.WaitForDevice(ctxTimeout(t, 30*time.Second), n.nqn, n.nsUUID)
	if err != nil {
		t.Fatal(err)
	}
	data := randomKey(t, 1<<20)
	writeDev(t, dev.Path, data)
	dropCaches(t)
	if !bytes.Equal(readDev(t, dev.Path, len(data)), data) {
		t.Fatal("data read back differs")
	}
	// Connecting again with the same secret returns the controller; with
	// another it is refused rather than returned.
	if again, err := ini.Connect(ctxTimeout(t, 30*time.Second), n.authOptions(hostIdent, key, "")); err != nil || again.Name != c.Name {
		t.Errorf("second connect = %s, %v", again.Name, err)
	}
	if _, err := ini.Connect(ctxTimeout(t, 30*time.Second), n.authOptions(hostIdent, wrong, "")); !errors.Is(err, nvmeof.ErrBusy) {
		t.Errorf("connect with other secrets over a live controller = %v, want ErrBusy", err)
	}

	// The target changes the secret: the live session is not affected
	// (nvmet checks secrets at connect and re-authentication only).
	if err := tgt.SetHostAuth(hostIdent.nqn, nvmet.HostAuth{Secret: newSecret(t)}); err != nil {
		t.Fatal(err)
	}
	dropCaches(t)
	if !bytes.Equal(readDev(t, dev.Path, len(data)), data) {
		t.Fatal("data read back differs after the target's secret changed")
	}
	if st, _ := ini.Controller(c.Name); !st.State.IsLive() {
		t.Errorf("controller %s is %s after the target's secret changed", c.Name, st.State)
	}
	if lines := k.logSince(t, "target secret changed under a live session"); hasLine(lines, "authentication failed") || hasLine(lines, "error recovery") {
		t.Error("changing the target's secret disturbed the live session")
	}
	disconnectAll(t, ini, n.nqn)

	// Connect times by DH group (median of 3, TCG), against no
	// authentication. The kernel needs no crypto module for them: DH, the
	// RFC 7919 groups, HMAC and SHA-2 are built in (CONFIG_CRYPTO_DH=y,
	// CONFIG_CRYPTO_DH_RFC7919_GROUPS=y).
	timings := map[string]time.Duration{}
	for _, group := range []string{"", "null", "ffdhe2048", "ffdhe3072", "ffdhe4096"} {
		a := nvmet.HostAuth{Secret: key, DHGroup: group}
		o := n.authOptions(hostIdent, key, "")
		label := "dhgroup " + group
		if group == "" {
			a, o, label = nvmet.HostAuth{}, n.connectOptions(hostIdent), "no authentication"
		}
		if err := tgt.SetHostAuth(hostIdent.nqn, a); err != nil {
			t.Fatalf("SetHostAuth(%s): %v", label, err)
		}
		var ds []time.Duration
		for i := 0; i < 3; i++ {
			start := time.Now()
			if _, err := ini.Connect(ctxTimeout(t, 60*time.Second), o); err != nil {
				t.Fatalf("connect with %s: %v", label, err)
			}
			ds = append(ds, time.Since(start))
			disconnectAll(t, ini, n.nqn)
		}
		timings[group] = median(ds)
		t.Logf("CONNECT TIME %-18s median %v (runs %v)", label+":", median(ds).Round(time.Millisecond), ds)
	}
	if timings["ffdhe2048"] > 5*time.Second {
		t.Errorf("ffdhe2048 connects take %v: too slow for the default", timings["ffdhe2048"])
	}
	k.logSince(t, "timings")
}

// TestAuthBidirectional: with a controller secret the host verifies the
// target: the right one connects, a wrong one is refused by the host, a
// target without a controller secret is refused, and a target that does
// not ask for authentication at all (which the kernel lets through) is
// refused by nvmeof.
func TestAuthBidirectional(t *testing.T) {
	tgt := nvmet.NewTarget("")
	ini := host.NewInitiator("")
	hostIdent := newHostIdentity(t, 63)
	key, ctrlKey := newSecret(t), newSecret(t)
	shortAdminTimeout(t)
	nodes := startAuthNodes(t, tgt, "abi", 1, 16<<20, hostIdent, 63, nvmet.HostAuth{Secret: key, CtrlSecret: ctrlKey})
	n := nodes[0]
	k := openKmsgTail(t)

	c, err := ini.Connect(ctxTimeout(t, 60*time.Second), n.authOptions(hostIdent, key, ctrlKey))
	if err != nil {
		t.Fatalf("right controller secret refused: %v", err)
	}
	lines := k.logSince(t, "right controller secret")
	if !hasLine(lines, c.Name+": qid 0: controller authenticated") {
		t.Error("kernel log does not show the controller authenticated")
	}
	if s, cs, err := ini.ControllerSecrets(c.Name); err != nil || s != key || cs != ctrlKey {
		t.Errorf("ControllerSecrets = (%s, %s, %v)", dhchap.Redact(s), dhchap.Redact(cs), err)
	}
	disconnectAll(t, ini, n.nqn)

	// Wrong controller secret: the target proves the real one, the HOST
	// refuses it.
	err = refusedConnect(t, ini, n.authOptions(hostIdent, key, newSecret(t)), "wrong controller secret")
	if !errors.Is(err, nvmeof.ErrAuthFailed) || !(errors.Is(err, syscall.EKEYREJECTED) || errors.Is(err, syscall.EIO)) {
		t.Fatalf("wrong controller secret: %v, want ErrAuthFailed with EKEYREJECTED (or EIO)", err)
	}
	lines = k.logSince(t, "wrong controller secret")
	if !hasLine(lines, "qid 0: controller authentication failed") {
		t.Error("the host did not log refusing the controller")
	}

	// The target authenticates the host but has no controller secret.
	if err := tgt.SetHostAuth(hostIdent.nqn, nvmet.HostAuth{Secret: key}); err != nil {
		t.Fatal(err)
	}
	err = refusedConnect(t, ini, n.authOptions(hostIdent, key, ctrlKey), "target without controller secret")
	if !errors.Is(err, nvmeof.ErrAuthFailed) || !(errors.Is(err, syscall.EKEYREJECTED) || errors.Is(err, syscall.EIO)) {
		t.Fatalf("target without controller secret: %v, want ErrAuthFailed", err)
	}
	if lines := k.logSince(t, "target without controller secret"); !hasLine(lines, "no ctrl key") {
		t.Error("the target did not log its missing controller secret")
	}

	// A target (or an impostor at its address) that does not ask for
	// authentication: the kernel connects, unauthenticated, and says
	// nothing; nvmeof finds no "controller authenticated" and refuses.
	if err := tgt.SetHostAuth(hostIdent.nqn, nvmet.HostAuth{}); err != nil {
		t.Fatal(err)
	}
	raw, err := rawFabricsWrite(rawOpts(n, hostIdent, ",dhchap_secret="+key+",dhchap_ctrl_secret="+ctrlKey))
	if err != nil {
		t.Logf("the kernel refuses a bidirectional connect to a target without authentication: %v (nvmeof's check is then redundant)", err)
	} else {
		t.Logf("the kernel connected %s with a controller secret to a target that did not authenticate", raw)
		disconnectAll(t, ini, n.nqn)
	}
	err = refusedConnect(t, ini, n.authOptions(hostIdent, key, ctrlKey), "target without authentication")
	if !errors.Is(err, nvmeof.ErrAuthFailed) || !strings.Contains(err.Error(), "did not authenticate itself") {
		t.Fatalf("bidirectional connect to a target without authentication = %v, want ErrAuthFailed", err)
	}
	k.logSince(t, "target without authentication")
}

// fileWriter writes files with random content into dir until stopped and
// remembers their checksums, so data written while keys rotate (or a
// snapshot is taken) can be verified.
type fileWriter struct {
	dir  string
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	sums map[string]string
	// synced is when each file's fsync returned.
	synced map[string]time.Time
	err    error
}

func startFileWriter(dir string) *fileWriter {
	w := &fileWriter{dir: dir, stop: make(chan struct{}), done: make(chan struct{}), sums: map[string]string{}, synced: map[string]time.Time{}}
	go func() {
		defer close(w.done)
		buf := make([]byte, 256<<10)
		for i := 0; ; i++ {
			select {
			case <-w.stop:
				return
			default:
			}
			if _, err := rand.Read(buf); err != nil {
				w.fail(err)
				return
			}
			p := filepath.Join(dir, fmt.Sprintf("rekey-%04d.bin", i))
			f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
			if err == nil {
				_, err = f.Write(buf)
				if err == nil {
					err = f.Sync()
				}
				if cerr := f.Close(); err == nil {
					err = cerr
				}
			}
			if err != nil {
				w.fail(fmt.Errorf("writing %s: %w", p, err))
				return
			}
			sum := sha256.Sum256(buf)
			w.mu.Lock()
			w.sums[p] = hex.EncodeToString(sum[:])
			w.synced[p] = time.Now()
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *fileWriter) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.err = err
}

func (w *fileWriter) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.sums)
}

// syncedBefore returns the checksums of the files whose fsync returned
// before t.
func (w *fileWriter) syncedBefore(t time.Time) map[string]string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string]string{}
	for p, at := range w.synced {
		if at.Before(t) {
			out[p] = w.sums[p]
		}
	}
	return out
}

func (w *fileWriter) finish() (map[string]string, error) {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.sums, w.err
}

// watchHealth samples the array and the controllers until stopped and
// reports everything that was ever not healthy.
func watchHealth(md *mdraid.Manager, ini *host.Initiator, mdName string, ctrls []string) (stop func() []string) {
	quit := make(chan struct{})
	done := make(chan []string)
	go func() {
		var problems []string
		seen := map[string]bool{}
		note := func(s string) {
			if !seen[s] {
				seen[s] = true
				problems = append(problems, s)
			}
		}
		for {
			if a, err := md.ReadArray(mdName); err != nil {
				note("md: " + err.Error())
			} else {
				if a.Degraded != 0 {
					note("array degraded: " + describe(a))
				}
				for _, m := range a.Members {
					if !m.State.InSync || m.State.Faulty {
						note("member not in sync: " + describe(a))
					}
				}
			}
			for _, c := range ctrls {
				st, err := ini.Controller(c)
				if err != nil || !st.State.IsLive() {
					note(fmt.Sprintf("controller %s: state %q err %v", c, st.State, err))
				}
			}
			select {
			case <-quit:
				done <- problems
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return func() []string {
		close(quit)
		return <-done
	}
}

// waitReauth waits for the kernel to log the outcome of re-authenticating
// controller ctrl and fails on anything but success.
func waitReauth(t *testing.T, k *kmsgTail, ctrl string, bidirectional bool) time.Duration {
	t.Helper()
	start := time.Now()
	var all []string
	ok := func() bool {
		if !hasLine(all, ctrl+": re-authenticating controller") || !hasLine(all, ctrl+": qid 0: authenticated with hash") {
			return false
		}
		return !bidirectional || hasLine(all, ctrl+": qid 0: controller authenticated")
	}
	for !ok() {
		all = append(all, relevant(k.lines())...)
		for _, bad := range []string{"authentication failed", "error recovery", "fatal error", "Reconnecting"} {
			if hasLine(all, bad) {
				t.Fatalf("re-authentication of %s failed:\n    %s", ctrl, strings.Join(all, "\n    "))
			}
		}
		if time.Since(start) > 30*time.Second {
			t.Fatalf("no re-authentication of %s logged within 30s:\n    %s", ctrl, strings.Join(all, "\n    "))
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("%s re-authenticated in %v:\n    %s", ctrl, time.Since(start).Round(time.Millisecond), strings.Join(all, "\n    "))
	return time.Since(start)
}

// TestAuthRekeyUnderIO rotates the secrets of both legs of an md RAID1
// while a filesystem on it is written: the target gets the new secret
// first, then each controller through sysfs (SetControllerSecrets), one
// secret at a time (host secret, then controller secret). The controllers
// re-authenticate without disconnecting: the array never degrades, every
// file written during the rotation reads back intact, an md check finds no
// mismatch, and afterwards a fresh connect with the old secrets is refused
// while the new ones work.
func TestAuthRekeyUnderIO(t *testing.T) {
	tgt := nvmet.NewTarget("")
	ini := host.NewInitiator("")
	md := mdraid.NewManager(utilexec.New(), "")
	hostIdent := newHostIdentity(t, 64)
	oldKey, oldCtrl := newSecret(t), newSecret(t)
	shortAdminTimeout(t)
	nodes := startAuthNodes(t, tgt, "ark", 2, 64<<20, hostIdent, 64, nvmet.HostAuth{Secret: oldKey, CtrlSecret: oldCtrl})
	k := openKmsgTail(t)

	var devs []string
	var ctrls []string
	for _, n := range nodes {
		c, err := ini.Connect(ctxTimeout(t, 60*time.Second), n.authOptions(hostIdent, oldKey, oldCtrl))
		if err != nil {
			t.Fatalf("connect %s: %v", n.nqn, err)
		}
		d, err := ini.WaitForDevice(ctxTimeout(t, 30*time.Second), n.nqn, n.nsUUID)
		if err != nil {
			t.Fatal(err)
		}
		devs = append(devs, d.Path)
		ctrls = append(ctrls, c.Name)
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			disconnectAll(t, ini, n.nqn)
		}
	})
	mdDev, err := md.NextFreeDevice()
	if err != nil {
		t.Fatal(err)
	}
	if err := md.Create(ctxTimeout(t, time.Minute), mdraid.CreateOptions{
		Device: mdDev, Name: "vol-rekey", Devices: devs, BitmapChunk: bitmapChunk, AssumeClean: true,
	}); err != nil {
		t.Fatalf("create %s: %v", mdDev, err)
	}
	mdName := filepath.Base(mdDev)
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = md.Stop(ctxTimeout(t, time.Minute), mdDev)
		}
	})
	arr, err := md.ReadArray(mdName)
	if err != nil {
		t.Fatal(err)
	}
	uuid := arr.UUID
	mnt := "/mnt/rekey"
	mkfsAndMount(t, mdDev, mnt)
	k.logSince(t, "setup")

	stopWatch := watchHealth(md, ini, mdName, ctrls)
	w := startFileWriter(mnt)
	waitIO := func(what string) {
		t.Helper()
		n := w.count()
		waitFor(t, 60*time.Second, "files written "+what, func() (bool, string) {
			return w.count() >= n+4, fmt.Sprintf("%d files", w.count())
		})
	}
	waitIO("before the rotation")

	newKey, newCtrl := newSecret(t), newSecret(t)
	// Host secret: target first (live sessions keep working on the old
	// one), then each controller, writing files in between.
	if err := tgt.SetHostAuth(hostIdent.nqn, nvmet.HostAuth{Secret: newKey, CtrlSecret: oldCtrl}); err != nil {
		t.Fatal(err)
	}
	waitIO("after the target's new host secret")
	for _, c := range ctrls {
		if err := ini.SetControllerSecrets(c, newKey, ""); err != nil {
			t.Fatalf("SetControllerSecrets(%s, host secret): %v", c, err)
		}
		waitReauth(t, k, c, true)
		waitIO("after re-keying " + c)
	}
	// Controller secret, the same way.
	if err := tgt.SetHostAuth(hostIdent.nqn, nvmet.HostAuth{Secret: newKey, CtrlSecret: newCtrl}); err != nil {
		t.Fatal(err)
	}
	waitIO("after the target's new controller secret")
	for _, c := range ctrls {
		if err := ini.SetControllerSecrets(c, "", newCtrl); err != nil {
			t.Fatalf("SetControllerSecrets(%s, controller secret): %v", c, err)
		}
		waitReauth(t, k, c, true)
		waitIO("after re-keying the controller secret of " + c)
	}
	sums, werr := w.finish()
	problems := stopWatch()
	if werr != nil {
		t.Fatalf("writer: %v", werr)
	}
	if len(problems) > 0 {
		t.Fatalf("the array or a leg was unhealthy during the rotation:\n    %s", strings.Join(problems, "\n    "))
	}
	t.Logf("%d files (%d MiB) written during the rotation; array and legs healthy throughout", len(sums), len(sums)/4)
	for _, c := range ctrls {
		if s, cs, err := ini.ControllerSecrets(c); err != nil || s != newKey || cs != newCtrl {
			t.Errorf("%s holds (%s, %s) after the rotation, %v", c, dhchap.Redact(s), dhchap.Redact(cs), err)
		}
	}

	dropCaches(t)
	verifyFiles(t, sums)
	checkMirrors(t, md, mdName)
	unmount(t, mnt)
	if err := md.Stop(ctxTimeout(t, time.Minute), mdDev); err != nil {
		t.Fatal(err)
	}
	stopped = true

	// Fresh connects: the old secrets are refused, the new ones work and
	// the array assembles with every file intact.
	devs = devs[:0]
	for i, n := range nodes {
		disconnectAll(t, ini, n.nqn)
		olds := [][2]string{{oldKey, oldCtrl}}
		if i == 0 {
			olds = append(olds, [2]string{oldKey, newCtrl}, [2]string{newKey, oldCtrl})
		}
		for _, old := range olds {
			what := fmt.Sprintf("%s with the old host secret %v, old controller secret %v", n.nqn, old[0] == oldKey, old[1] == oldCtrl)
			if err := refusedConnect(t, ini, n.authOptions(hostIdent, old[0], old[1]), what); !errors.Is(err, nvmeof.ErrAuthFailed) {
				t.Fatalf("%s = %v, want ErrAuthFailed", what, err)
			}
		}
		if _, err := ini.Connect(ctxTimeout(t, 60*time.Second), n.authOptions(hostIdent, newKey, newCtrl)); err != nil {
			t.Fatalf("connect to %s with the new secrets: %v", n.nqn, err)
		}
		d, err := ini.WaitForDevice(ctxTimeout(t, 30*time.Second), n.nqn, n.nsUUID)
		if err != nil {
			t.Fatal(err)
		}
		devs = append(devs, d.Path)
	}
	k.logSince(t, "fresh connects after the rotation")
	if err := md.Assemble(ctxTimeout(t, time.Minute), mdDev, uuid, devs); err != nil {
		t.Fatalf("assemble: %v", err)
	}
	stopped = false
	if a, err := md.FindByUUID(uuid); err != nil || a.Degraded != 0 {
		t.Fatalf("assembled array: %v %s", err, describe(a))
	}
	mount(t, mdDev, mnt)
	dropCaches(t)
	verifyFiles(t, sums)
	unmount(t, mnt)
}
