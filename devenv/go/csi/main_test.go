// Node service checks; they mount, so run them as root in a mount namespace of
// their own: unshare --mount --propagation private go test ./...
package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func mountOptions(t *testing.T, target string) string {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) > 5 && unescape(fields[4]) == target {
			return fields[5]
		}
	}
	return ""
}

func publish(p *plugin, folder, target string, readonly bool) error {
	_, err := p.NodePublishVolume(context.Background(), &csi.NodePublishVolumeRequest{
		VolumeId:   folder,
		TargetPath: target,
		Readonly:   readonly,
		VolumeCapability: &csi.VolumeCapability{
			AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
		},
	})
	return err
}

func unpublish(p *plugin, folder, target string) error {
	_, err := p.NodeUnpublishVolume(context.Background(), &csi.NodeUnpublishVolumeRequest{
		VolumeId: folder, TargetPath: target,
	})
	return err
}

func TestPublishBindsTheFolderAndUnpublishUndoesIt(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (and a mount namespace of its own: unshare --mount)")
	}
	root := t.TempDir()
	p := &plugin{driver: "d", nodeID: "n", volumeRoot: filepath.Join(root, "volumes")}
	folder := filepath.Join(p.volumeRoot, "pvc-1")
	for _, readonly := range []bool{false, true} {
		target := filepath.Join(root, "pods", "mount")
		for range 2 { // idempotent
			if err := publish(p, folder, target, readonly); err != nil {
				t.Fatal(err)
			}
		}
		options := mountOptions(t, target)
		if !strings.HasPrefix(options, map[bool]string{false: "rw", true: "ro"}[readonly]) {
			t.Fatalf("readonly %v: mount options %q", readonly, options)
		}
		err := os.WriteFile(filepath.Join(target, "f"), []byte("x"), 0o600)
		if readonly == (err == nil) {
			t.Fatalf("readonly %v: write gave %v", readonly, err)
		}
		for range 2 { // idempotent
			if err := unpublish(p, folder, target); err != nil {
				t.Fatal(err)
			}
		}
		if mountOptions(t, target) != "" {
			t.Fatalf("%s still mounted", target)
		}
		if _, err := os.Stat(target); !os.IsNotExist(err) {
			t.Fatalf("%s not removed: %v", target, err)
		}
	}
	if data, err := os.ReadFile(filepath.Join(folder, "f")); err != nil || string(data) != "x" {
		t.Fatalf("the folder holds %q, %v", data, err)
	}
}

func TestAHandleOutsideTheVolumeRootIsRefused(t *testing.T) {
	p := &plugin{volumeRoot: "/volumes"}
	for _, handle := range []string{"", "pvc-1", "/volumes", "/volumes/../etc", "/etc"} {
		err := publish(p, handle, "/target", false)
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("handle %q: %v", handle, err)
		}
	}
}
