# bash completion for cloison -- source this file or copy it to
# /etc/bash_completion.d/cloison. VM names come from the daemon
# (`cloison vm list --json`), so they complete only when it is reachable.

_cloison_vm_names()
{
	local sockopt=()
	local i
	for ((i = 1; i < COMP_CWORD; i++)); do
		if [[ ${COMP_WORDS[i]} == --socket ]]; then
			sockopt=(--socket "${COMP_WORDS[i + 1]}")
		fi
	done
	cloison vm list --json "${sockopt[@]}" 2>/dev/null |
		sed -n 's/^    "name": "\(.*\)",\{0,1\}$/\1/p'
}

_cloison_switch_names()
{
	local sockopt=()
	local i
	for ((i = 1; i < COMP_CWORD; i++)); do
		if [[ ${COMP_WORDS[i]} == --socket ]]; then
			sockopt=(--socket "${COMP_WORDS[i + 1]}")
		fi
	done
	cloison switch list --json "${sockopt[@]}" 2>/dev/null |
		sed -n 's/^    "name": "\(.*\)",\{0,1\}$/\1/p'
}

_cloison()
{
	local cur prev noun verb
	cur=${COMP_WORDS[COMP_CWORD]}
	prev=${COMP_WORDS[COMP_CWORD - 1]}
	noun=${COMP_WORDS[1]}
	verb=${COMP_WORDS[2]}

	local common="--json --socket --help"
	local config="--kernel --initrd --cmdline --memory --cpus --net --notes --operator
		--automatic-start-action --automatic-start-delay --automatic-stop-action
		--integration --heartbeat-interval --cpu-reserve --cpu-limit --cpu-weight"

	if [[ $noun == switch ]]; then
		case $prev in
		--type) COMPREPLY=($(compgen -W "private internal external nat" -- "$cur")); return ;;
		--adapter) COMPREPLY=($(compgen -W "$(ls /sys/class/net 2>/dev/null)" -- "$cur")); return ;;
		--address | --subnet | --notes | --socket) return ;;
		esac
	fi
	case $prev in
	--kernel | --initrd | --disk | --add-disk | --remove-disk | --socket | --parent)
		COMPREPLY=($(compgen -f -- "$cur"))
		return
		;;
	--automatic-start-action)
		COMPREPLY=($(compgen -W "nothing start" -- "$cur"))
		return
		;;
	--automatic-stop-action)
		COMPREPLY=($(compgen -W "keep-running shutdown turn-off save" -- "$cur"))
		return
		;;
	--type)
		COMPREPLY=($(compgen -W "fixed dynamic differencing" -- "$cur"))
		return
		;;
	--format)
		COMPREPLY=($(compgen -W "vhdx vhd raw" -- "$cur"))
		return
		;;
	--operator | --remove-operator)
		COMPREPLY=($(compgen -u -- "$cur"))
		return
		;;
	--memory | --cpus | --cmdline | --notes | --timeout | --count | --net | --size | \
		--automatic-start-delay | --block-size)
		return
		;;
	esac

	if ((COMP_CWORD == 1)); then
		COMPREPLY=($(compgen -W "vm disk host switch --help --version" -- "$cur"))
		return
	fi
	if ((COMP_CWORD == 2)); then
		case $noun in
		vm) COMPREPLY=($(compgen -W "create list show set start stop pause resume restart
			save checkpoint discard-saved-state upgrade-version export import remove
			console kvp copy-file watch --help" -- "$cur")) ;;
		disk) COMPREPLY=($(compgen -W "create info check convert resize compact merge
			set-parent --help" -- "$cur")) ;;
		host) COMPREPLY=($(compgen -W "info versions set --help" -- "$cur")) ;;
		switch) COMPREPLY=($(compgen -W "create list show set remove nat leases --help" \
			-- "$cur")) ;;
		esac
		return
	fi

	case $noun in
	vm)
		local opts=$common
		case $verb in
		create) opts="$common $config --disk --config-version" ;;
		upgrade-version) opts="$common --yes" ;;
		set) opts="$common $config --add-disk --remove-disk --remove-operator --no-initrd --no-net
			--connect --disconnect" ;;
		stop) opts="$common --turn-off --timeout" ;;
		watch) opts="$common --count" ;;
		esac
		if [[ $cur == -* ]]; then
			COMPREPLY=($(compgen -W "$opts" -- "$cur"))
		elif [[ $verb != create && $verb != list ]]; then
			COMPREPLY=($(compgen -W "$(_cloison_vm_names)" -- "$cur"))
		fi
		;;
	host)
		COMPREPLY=($(compgen -W "--json --socket --help --mac-range" -- "$cur"))
		;;
	switch)
		local opts=$common
		case $verb in
		create) opts="$common --type --adapter --allow-management-os --no-allow-management-os
			--yes --address --subnet --notes" ;;
		set) opts="$common --notes" ;;
		remove) opts="$common --force" ;;
		esac
		if [[ $cur == -* ]]; then
			COMPREPLY=($(compgen -W "$opts" -- "$cur"))
		elif [[ $verb == nat && COMP_CWORD -eq 3 ]]; then
			COMPREPLY=($(compgen -W "forward" -- "$cur"))
		elif [[ $verb == nat && COMP_CWORD -eq 4 ]]; then
			COMPREPLY=($(compgen -W "add list remove" -- "$cur"))
		elif [[ $verb == nat && COMP_CWORD -eq 6 ]]; then
			COMPREPLY=($(compgen -W "tcp udp" -- "$cur"))
		elif [[ $verb != create && $verb != list ]]; then
			COMPREPLY=($(compgen -W "$(_cloison_switch_names)" -- "$cur"))
		fi
		;;
	disk)
		if [[ $cur == -* ]]; then
			COMPREPLY=($(compgen -W "--size --type --format --parent --block-size --sector-size
				--physical-sector-size --json --help" -- "$cur"))
		else
			COMPREPLY=($(compgen -f -- "$cur"))
		fi
		;;
	esac
}
complete -F _cloison cloison
