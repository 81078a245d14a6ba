//! The `container` label: the container a process runs in, read from the
//! path of its cgroup (`/proc/PID/cgroup`), as container runtimes name
//! them: `docker-<id>.scope` (Docker with systemd), `/docker/<id>` (Docker
//! with cgroupfs), `cri-containerd-<id>.scope` and `/kubepods/…/<id>`
//! (Kubernetes with containerd), `crio-<id>.scope` (CRI-O),
//! `libpod-<id>.scope` (Podman). Empty when the process is in none.

/// The 64-hex-digit container ID in the text of a `/proc/PID/cgroup`, or
/// `None` when no line's path names a container (a process on the host).
#[must_use]
pub fn container_id(cgroup: &str) -> Option<String> {
    cgroup.lines().find_map(|line| {
        // `hierarchy-ID:controllers:path`; the path may contain ':'.
        let path = line.splitn(3, ':').nth(2)?;
        path.rsplit('/').find_map(component_id)
    })
}

/// The container ID one path component names, if it names one.
fn component_id(component: &str) -> Option<String> {
    let name = component.strip_suffix(".scope").unwrap_or(component);
    // CRI-O's monitor process of a container is not the container.
    if name.starts_with("crio-conmon-") {
        return None;
    }
    let id = [
        "docker-",
        "cri-containerd-",
        "crio-",
        "libpod-",
        "containerd-",
    ]
    .iter()
    .find_map(|p| name.strip_prefix(p))
    .unwrap_or(name);
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_ascii_lowercase())
}

/// The container of process `pid`: its ID, or "" (not in a container, or
/// its cgroup cannot be read).
#[must_use]
pub fn of_pid(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()
        .and_then(|c| container_id(&c))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::container_id;

    const ID: &str = "3f4a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8";

    #[test]
    fn runtimes() {
        for text in [
            format!("0::/system.slice/docker-{ID}.scope\n"),
            format!("12:memory:/docker/{ID}\n11:cpu:/docker/{ID}\n"),
            format!(
                "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234_5678.slice/cri-containerd-{ID}.scope\n"
            ),
            format!("0::/kubepods/burstable/pod0a1b2c3d-1111-2222-3333-444455556666/{ID}\n"),
            format!("0::/kubepods.slice/kubepods-pod1.slice/crio-{ID}.scope\n"),
            format!(
                "0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container\n"
            ),
        ] {
            assert_eq!(container_id(&text).as_deref(), Some(ID), "{text}");
        }
    }

    #[test]
    fn host_processes() {
        for text in [
            "0::/user.slice/user-0.slice/session-3.scope\n",
            "0::/system.slice/ssh.service\n",
            "0::/\n",
            "",
            "12:memory:/user.slice\n1:name=systemd:/init.scope\n",
            // A 64-character name that is not hexadecimal.
            "0::/system.slice/docker-zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz.scope\n",
        ] {
            assert_eq!(container_id(text), None, "{text:?}");
        }
        let conmon = format!("0::/kubepods.slice/crio-conmon-{ID}.scope\n");
        assert_eq!(
            container_id(&conmon),
            None,
            "CRI-O's conmon is not the container"
        );
    }
}
