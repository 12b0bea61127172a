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

_cloison()
{
	local cur prev noun verb
	cur=${COMP_WORDS[COMP_CWORD]}
	prev=${COMP_WORDS[COMP_CWORD - 1]}
	noun=${COMP_WORDS[1]}
	verb=${COMP_WORDS[2]}

	local common="--json --socket --help"
	local config="--kernel --initrd --cmdline --memory --cpus --net --notes --operator
		--automatic-start-action --automatic-start-delay --automatic-stop-action"

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
		COMPREPLY=($(compgen -W "keep-running shutdown turn-off" -- "$cur"))
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
		COMPREPLY=($(compgen -W "vm disk host --help --version" -- "$cur"))
		return
	fi
	if ((COMP_CWORD == 2)); then
		case $noun in
		vm) COMPREPLY=($(compgen -W "create list show set start stop pause resume restart
			remove console watch --help" -- "$cur")) ;;
		disk) COMPREPLY=($(compgen -W "create info check convert resize compact merge
			set-parent --help" -- "$cur")) ;;
		host) COMPREPLY=($(compgen -W "info --help" -- "$cur")) ;;
		esac
		return
	fi

	case $noun in
	vm)
		local opts=$common
		case $verb in
		create) opts="$common $config --disk" ;;
		set) opts="$common $config --add-disk --remove-disk --remove-operator --no-initrd --no-net" ;;
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
		COMPREPLY=($(compgen -W "--json --socket --help" -- "$cur"))
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
