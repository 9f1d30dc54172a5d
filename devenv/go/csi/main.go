// The smallest CSI node plugin for the local-csi class of the local clusters
// (driver hostpath.csi.stsmigrate.dev), run by devenv/realnodes.py beside each real
// kubelet, in the node's mount namespace.
//
// A volume of that driver is a folder: its volumeHandle is the folder's absolute
// path under the volume root both clusters share (kwok's csi-provision stage names
// it). The plugin serves CSI's Identity and Node services on -csi-socket:
// NodePublishVolume bind-mounts the folder onto target_path (read-only when asked),
// NodeUnpublishVolume unmounts it and removes target_path; both are idempotent. No
// controller service: provisioning and attaching are kwok's stages. It also serves
// kubelet's plugin registration (pluginregistration/v1) on -registration-socket, a
// socket in the kubelet's <root-dir>/plugins_registry/, so the kubelet finds it.
package main

import (
	"context"
	"flag"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	registration "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

const version = "0.1.0"

type plugin struct {
	csi.UnimplementedIdentityServer
	csi.UnimplementedNodeServer
	registration.UnimplementedRegistrationServer

	driver     string
	nodeID     string
	volumeRoot string
	endpoint   string
	// One NodePublish/NodeUnpublish at a time: each checks, then mounts or unmounts.
	mu sync.Mutex
}

// -- Identity -------------------------------------------------------------------

func (p *plugin) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: p.driver, VendorVersion: version}, nil
}

func (p *plugin) GetPluginCapabilities(context.Context, *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	// No CONTROLLER_SERVICE: kwok plays the provisioner and the attacher.
	return &csi.GetPluginCapabilitiesResponse{}, nil
}

func (p *plugin) Probe(context.Context, *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	return &csi.ProbeResponse{}, nil
}

// -- Node -----------------------------------------------------------------------

func (p *plugin) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{NodeId: p.nodeID}, nil
}

func (p *plugin) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	// No STAGE_UNSTAGE_VOLUME: the kubelet goes straight to NodePublishVolume.
	return &csi.NodeGetCapabilitiesResponse{}, nil
}

// folder is the volume's folder: its handle, which must lie under the volume root.
func (p *plugin) folder(handle string) (string, error) {
	clean := filepath.Clean(handle)
	if handle == "" || !filepath.IsAbs(handle) || !strings.HasPrefix(clean, p.volumeRoot+"/") {
		return "", status.Errorf(codes.InvalidArgument, "volume_handle %q is not a folder under %s", handle, p.volumeRoot)
	}
	return clean, nil
}

func (p *plugin) NodePublishVolume(_ context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	folder, err := p.folder(req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	target := req.GetTargetPath()
	if target == "" || !filepath.IsAbs(target) {
		return nil, status.Errorf(codes.InvalidArgument, "target_path %q is not an absolute path", target)
	}
	if req.GetVolumeCapability().GetMount() == nil {
		return nil, status.Error(codes.InvalidArgument, "only mount volumes are supported (no block)")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	mounted, err := isMountPoint(target)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if mounted {
		log.Printf("NodePublishVolume %s on %s: already mounted", folder, target)
		return &csi.NodePublishVolumeResponse{}, nil
	}
	// The provisioner (a kwok stage) names the folder but does not make it.
	if err := os.MkdirAll(folder, 0o777); err != nil {
		return nil, status.Errorf(codes.Internal, "mkdir %s: %v", folder, err)
	}
	if err := os.MkdirAll(target, 0o750); err != nil {
		return nil, status.Errorf(codes.Internal, "mkdir %s: %v", target, err)
	}
	if err := syscall.Mount(folder, target, "", syscall.MS_BIND, ""); err != nil {
		return nil, status.Errorf(codes.Internal, "bind mount %s on %s: %v", folder, target, err)
	}
	if req.GetReadonly() {
		flags := uintptr(syscall.MS_BIND | syscall.MS_REMOUNT | syscall.MS_RDONLY)
		if err := syscall.Mount("", target, "", flags, ""); err != nil {
			_ = syscall.Unmount(target, 0)
			return nil, status.Errorf(codes.Internal, "remount %s read-only: %v", target, err)
		}
	}
	log.Printf("NodePublishVolume %s on %s (readonly %v)", folder, target, req.GetReadonly())
	return &csi.NodePublishVolumeResponse{}, nil
}

func (p *plugin) NodeUnpublishVolume(_ context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	target := req.GetTargetPath()
	if req.GetVolumeId() == "" || target == "" || !filepath.IsAbs(target) {
		return nil, status.Error(codes.InvalidArgument, "volume_id and an absolute target_path are required")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		mounted, err := isMountPoint(target)
		if err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		if !mounted {
			break
		}
		if err := syscall.Unmount(target, 0); err != nil {
			return nil, status.Errorf(codes.Internal, "umount %s: %v", target, err)
		}
	}
	if err := os.Remove(target); err != nil && !os.IsNotExist(err) {
		return nil, status.Errorf(codes.Internal, "rmdir %s: %v", target, err)
	}
	log.Printf("NodeUnpublishVolume %s from %s", req.GetVolumeId(), target)
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

// isMountPoint tells whether path is a mount point of this mount namespace.
func isMountPoint(path string) (bool, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	clean := filepath.Clean(path)
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) > 4 && unescape(fields[4]) == clean {
			return true, nil
		}
	}
	return false, nil
}

// unescape undoes mountinfo's octal escapes (\040 for a space, ...).
func unescape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// -- kubelet plugin registration --------------------------------------------------

func (p *plugin) GetInfo(context.Context, *registration.InfoRequest) (*registration.PluginInfo, error) {
	return &registration.PluginInfo{
		Type:              registration.CSIPlugin,
		Name:              p.driver,
		Endpoint:          p.endpoint,
		SupportedVersions: []string{"1.0.0"},
	}, nil
}

func (p *plugin) NotifyRegistrationStatus(_ context.Context, s *registration.RegistrationStatus) (*registration.RegistrationStatusResponse, error) {
	if s.GetPluginRegistered() {
		log.Printf("registered with the kubelet")
	} else {
		log.Printf("the kubelet refused the registration: %s", s.GetError())
	}
	return &registration.RegistrationStatusResponse{}, nil
}

// -------------------------------------------------------------------------------

func listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, err
	}
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	return net.Listen("unix", path)
}

func main() {
	driver := flag.String("driver", "hostpath.csi.stsmigrate.dev", "the CSI driver name")
	nodeID := flag.String("node-id", "", "the node's name (NodeGetInfo)")
	volumeRoot := flag.String("volume-root", "", "the folder holding every volume's folder")
	csiSocket := flag.String("csi-socket", "", "the unix socket of the CSI services")
	regSocket := flag.String("registration-socket", "", "the unix socket in the kubelet's plugins_registry")
	flag.Parse()
	if *nodeID == "" || *volumeRoot == "" || *csiSocket == "" || *regSocket == "" {
		log.Fatal("-node-id, -volume-root, -csi-socket and -registration-socket are required")
	}
	p := &plugin{
		driver:     *driver,
		nodeID:     *nodeID,
		volumeRoot: filepath.Clean(*volumeRoot),
		endpoint:   *csiSocket,
	}
	csiServer := grpc.NewServer()
	csi.RegisterIdentityServer(csiServer, p)
	csi.RegisterNodeServer(csiServer, p)
	regServer := grpc.NewServer()
	registration.RegisterRegistrationServer(regServer, p)

	// The CSI socket first: the kubelet calls it as soon as it sees the registration one.
	csiListener, err := listen(*csiSocket)
	if err != nil {
		log.Fatalf("listen %s: %v", *csiSocket, err)
	}
	go func() { _ = csiServer.Serve(csiListener) }()
	regListener, err := listen(*regSocket)
	if err != nil {
		log.Fatalf("listen %s: %v", *regSocket, err)
	}
	go func() { _ = regServer.Serve(regListener) }()
	log.Printf("%s %s serving %s, registering at %s", *driver, version, *csiSocket, *regSocket)

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	<-signals
	// Stop removes the sockets (net.UnixListener unlinks its file on Close).
	regServer.Stop()
	csiServer.Stop()
	log.Printf("stopped")
}
